# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv on first use, install dmtts with constraints.txt (so pip never swaps the
# torch build) and the Debian synthesizers; later runs reuse everything and take seconds.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dmtts-installed
# espeak-ng: phonemizer; flite + festival voices: the demo corpus's speakers;
# chromium + chromium-driver: the headless-browser tests of `dmtts serve` and report.html
APT_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts chromium chromium-driver codec2 opus-tools ffmpeg
APT_COMMANDS := espeak-ng flite text2wave chromium chromedriver c2enc opusenc ffmpeg
FESTIVAL_VOICES := english/kal_diphone english/ked_diphone us/cmu_us_slt_arctic_hts
PYTEST_ARGS ?=

.PHONY: demo test venv system-deps clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the requirement files or setup.py change.
$(STAMP): $(PY) setup.py requirements.txt requirements-dev.txt constraints.txt
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -r requirements-dev.txt
	$(PY) -m pip install -q -c constraints.txt --no-deps -e .
	# speechtokenizer is only the benchmark's reference implementation; its torchaudio
	# dependency has no CPU wheel that imports, so it is installed without dependencies.
	$(PY) -m pip install -q -c constraints.txt --no-deps speechtokenizer
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	@missing=""; for p in $(APT_COMMANDS); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	for v in $(FESTIVAL_VOICES); do [ -d /usr/share/festival/voices/$$v ] || missing="$$missing $$v"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "dmtts needs Debian packages for:$$missing. Run as root:"; \
	    echo "  sudo apt-get update && sudo apt-get install -y $(APT_PACKAGES)"; \
	    exit 1; \
	  fi; \
	fi

demo: venv system-deps
	cd recipes/demo && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ./run.sh

test: venv system-deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q $(PYTEST_ARGS) tests

clean-demo:
	rm -rf recipes/demo/data recipes/demo/exp recipes/demo/download recipes/demo/quality
