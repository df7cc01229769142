"""Headless Chromium (Debian's chromium + chromium-driver, driven by selenium) on the two pages
the toolkit makes: the `dmtts serve` web app, through a whole synthesis, and report.html, whose
every audio player must load. Skips, saying why, only where Chromium is not installed."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from synthesis_fixtures import PRETRAINED

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
# decode a URL's audio in the page (Web Audio) and measure it: [seconds, RMS] or an error string
_DECODE_JS = """
const [url, done] = arguments;
fetch(url).then(r => r.arrayBuffer())
  .then(b => new OfflineAudioContext(1, 16000, 16000).decodeAudioData(b))
  .then(a => { const x = a.getChannelData(0); let s = 0; for (const v of x) s += v * v;
               done([a.duration, Math.sqrt(s / Math.max(x.length, 1))]); })
  .catch(e => done(String(e)));
"""


@pytest.fixture(scope="module")
def browser(pytestconfig):
    if not CHROMIUM or not CHROMEDRIVER:
        reason = ("Chromium is not installed (the Makefile's system-deps step installs Debian's chromium and "
                  "chromium-driver as root: apt-get install chromium chromium-driver)")
        capture = pytestconfig.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():  # shown even under -q
            print(f"\nSKIP browser tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1300", "--autoplay-policy=no-user-gesture-required", "--allow-file-access-from-files"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, proc=None):
    end = time.time() + timeout
    from selenium.common.exceptions import WebDriverException

    while time.time() < end:
        try:
            value = predicate()
        except WebDriverException:  # not rendered yet, or re-rendered under us
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.skipif(not (PRETRAINED / "ar" / "config.json").is_file(), reason="the shipped demo models are missing")
def test_serve_page_synthesizes_end_to_end(browser, tmp_path):
    from selenium.webdriver.common.by import By

    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    # a separate process, as a user runs it; defaults to the shipped demo models and prompt
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_WAIT_POLICY="PASSIVE", GRADIO_TEMP_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "dmtts.cli", "serve", "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    try:
        def up():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        _wait(up, 90, "the server to listen", proc)
        browser.get(f"http://127.0.0.1:{port}/")
        css = lambda sel: browser.find_element(By.CSS_SELECTOR, sel)  # noqa: E731
        # the demo prompt is there from the start, already transcribed
        first = _wait(lambda: css("#prompt_text textarea").get_attribute("value"), 60, "the first transcript", proc)
        assert "margaret" in first.lower()
        # upload another prompt: it is cut, shown and transcribed into the editable transcript
        css("#prompt_audio button[aria-label='Clear']").click()
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#prompt_audio input[type=file]"), 30, "the upload input")
        long_prompt = tmp_path / "long_prompt.wav"
        wav, sr = sf.read(PRETRAINED / "prompt.wav")
        sf.write(long_prompt, np.concatenate([wav, np.zeros(sr), wav]), sr)  # 5.3 s: 3 s are used
        css("#prompt_audio input[type=file]").send_keys(str(long_prompt))
        expected = f"Prompt: 0.00–3.00 s of the {(2 * len(wav) + sr) / sr:.2f} s recording (3.00 s used)."
        _wait(lambda: css("#prompt_info").text == expected, 60, "the cut", proc)
        transcript = _wait(lambda: css("#prompt_text textarea").get_attribute("value"), 60, "the transcript", proc)
        assert "margaret" in transcript.lower()
        # the start slider now spans the recording
        assert css("#prompt_start input[type=range]").get_attribute("max") == "5.2"
        # an error is shown in the page, without a traceback
        css("#synthesize").click()
        _wait(lambda: "Error" in css("#status").text, 30, "the error message", proc)
        assert "the text to synthesize is empty" in css("#status").text
        assert "Traceback" not in browser.page_source
        # a full synthesis, streamed (the default): the live player gets audio while it is being
        # made, then the whole result appears and holds non-silent audio
        css("#text textarea").send_keys("The old map was hidden in the wooden chest. It was found at dawn.")
        css("#synthesize").click()
        _wait(lambda: "s of audio" in css("#status").text, 120, "the synthesis", proc)
        assert "2 sentences" in css("#status").text and "streamed: first audio after" in css("#status").text
        assert browser.find_elements(By.CSS_SELECTOR, "#live")  # the streaming player the chunks went to
        assert browser.find_elements(By.CSS_SELECTOR, "#result audio")
        link = _wait(lambda: [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#result a[href]")
                              if ".wav" in a.get_attribute("href")], 30, "the download link")[0]
        measured = browser.execute_async_script(_DECODE_JS, link)
        assert isinstance(measured, list), measured
        seconds, rms = measured
        assert seconds > 1.0 and rms > 0.01, measured
        browser.save_screenshot(str(tmp_path / "serve.png"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def _fake_evaluations(root: Path) -> dict:
    """Evaluation directories as `dmtts eval codec|tts` and `dmtts synthesize --pairs` leave them."""
    from lhotse import CutSet, Recording, RecordingSet

    rng = np.random.default_rng(0)
    tone = lambda f, s=1.0: (0.2 * np.sin(2 * np.pi * f * np.arange(int(s * 16000)) / 16000)).astype(np.float32)  # noqa: E731
    (root / "data" / "cuts").mkdir(parents=True)
    recs = []
    for i in range(2):
        p = root / "audio" / f"u{i}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(p, tone(200 + 50 * i), 16000)
        recs.append(Recording.from_file(p))
    CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs)).modify_ids(
        lambda i: i.split("-")[0]).to_file(root / "data" / "cuts" / "eval.jsonl.gz")
    codec = root / "exp" / "codec" / "eval"
    for system in ("dmcodec_nq1", "dmcodec_nq8"):
        (codec / "recon" / system).mkdir(parents=True)
        for i in range(2):
            sf.write(codec / "recon" / system / f"u{i}.wav", tone(200 + 50 * i) + 0.01 * rng.standard_normal(16000), 16000)
    (codec / "summary.md").write_text("## Codec reconstruction (2 utterances, eval.jsonl.gz)\n\n| System | STOI ↑ |\n|---|---|\n"
                                      "| dmcodec_nq1 | 0.50 |\n| dmcodec_nq8 | 0.80 |\n")
    (codec / "summary.csv").write_text("system,bitrate_kbps,n,stoi\ndmcodec_nq1,0.5,2,0.5\ndmcodec_nq8,4,2,0.8\n")
    (codec / "scores_dmcodec_nq1.csv").write_text("utt_id,wer,wil,stoi,pesq,visqol,sim,mos_proxy\nu0,,,0.5,,,,\nu1,,,0.5,,,,\n")
    (codec / "transcripts_dmcodec_nq1.tsv").write_text("utt_id\treference\thypothesis\nu0\tfirst words\tx\nu1\tsecond\ty\n")
    tts = root / "exp" / "tts"
    (tts / "eval").mkdir(parents=True)
    (tts / "eval" / "summary.md").write_text("## Zero-shot TTS (1 utterances, pairs.jsonl.gz)\n\n| System | n |\n|---|---|\n| tts | 1 |\n")
    (tts / "eval" / "scores_tts.csv").write_text("utt_id,wer,wil,stoi,pesq,visqol,sim,mos_proxy\nt0,50,50,,,,0.5,2\n")
    (tts / "synth" / "prompts").mkdir(parents=True)
    sf.write(tts / "synth" / "t0.wav", tone(300, 1.5), 16000)
    sf.write(tts / "synth" / "prompts" / "t0.wav", tone(250, 3.0), 16000)
    (tts / "synth" / "manifest.jsonl").write_text(json.dumps({
        "id": "t0", "cut_id": "t0", "repeat": 0, "path": str(tts / "synth" / "t0.wav"), "duration": 1.5,
        "target_text": "Hello there.", "prompt_text": "A prompt.", "prompt_path": str(tts / "synth" / "prompts" / "t0.wav")}) + "\n")
    return {"codec": codec, "tts": tts / "eval"}


def test_report_html_players_all_load(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from dmtts.eval.report import write_report

    dirs = _fake_evaluations(tmp_path)
    out = write_report(tmp_path / "exp" / "report.md", codec_eval=dirs["codec"], tts_eval=dirs["tts"], echo=False)
    page = out.with_suffix(".html")
    html_text = page.read_text()
    assert "<table>" in html_text and "0.80" in html_text and "Hello there." in html_text
    browser.get(page.resolve().as_uri())
    audios = browser.find_elements(By.TAG_NAME, "audio")
    # codec: 2 utterances x (original + 2 bitrates); TTS: prompt + synthesis
    assert len(audios) == 2 * 3 + 2
    state = _wait(lambda: (lambda s: s if all(x[0] >= 1 or x[1] for x in s) else None)(browser.execute_script(
        "return [...document.querySelectorAll('audio')].map(a => [a.readyState, a.error && a.error.code, a.duration]);")),
        30, "every audio element to load")
    assert all(err is None and dur > 0.9 for _, err, dur in state), state  # loaded, none failed
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000
