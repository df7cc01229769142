# Kaldi-style option parsing for recipe scripts. Source it after defining the defaults:
#
#   stage=0
#   stop_stage=100
#   corpus_dir=/data/LibriSpeech   # where the corpus lives
#   . ../../egs_tools/parse_options.sh
#
# Then `./run.sh --stage 2 --stop-stage 4 --corpus-dir /x` sets stage=2, stop_stage=4,
# corpus_dir=/x. Rules:
#   --name value  or  --name=value   sets `name` (dashes become underscores), but only if
#                                    that variable is already defined; otherwise it is an error.
#   --help | -h                      prints the options with their defaults (and the comment
#                                    after each default in the calling script) and exits 0.
#   --                               ends option parsing.
# The first argument that does not start with "--" ends option parsing; it and the rest stay
# in "$@". An unknown option, or one missing its value, prints an error and exits with status 1.

__po_script="${0}"
# run.sh scripts cd into their own directory before sourcing this file
[ -f "${__po_script}" ] || __po_script="$(basename "${0}")"

__po_print_help() {
  echo "Usage: ${__po_script} [options] [args]"
  [ -n "${help_message:-}" ] && echo "${help_message}"
  echo "Options (current defaults):"
  # Variables are the `name=value` assignments at the start of a line of the calling script,
  # before it sources this file.
  local line name comment
  while IFS= read -r line; do
    case "${line}" in
      *parse_options.sh*) break ;;
    esac
    if [[ "${line}" =~ ^([A-Za-z_][A-Za-z0-9_]*)= ]] && [ "${BASH_REMATCH[1]}" != help_message ]; then
      name="${BASH_REMATCH[1]}"
      comment=""
      [[ "${line}" =~ \#[[:space:]]*(.*)$ ]] && comment="  # ${BASH_REMATCH[1]}"
      printf '  --%-24s %s%s\n' "${name//_/-}" "'${!name}'" "${comment}"
    fi
  done < "${__po_script}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      __po_print_help
      exit 0 ;;
    --)
      shift
      break ;;
    --*=*)
      __po_name="${1%%=*}"; __po_name="${__po_name#--}"; __po_name="${__po_name//-/_}"
      __po_value="${1#*=}"
      shift ;;
    --*)
      __po_name="${1#--}"; __po_name="${__po_name//-/_}"
      if [ $# -lt 2 ]; then
        echo "$0: option '$1' needs a value" >&2
        exit 1
      fi
      __po_value="$2"
      shift 2 ;;
    *)
      break ;;
  esac
  if ! [[ "${__po_name}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!__po_name+set}" ]; then
    echo "$0: unknown option '--${__po_name//_/-}' (run '$0 --help' for the list)" >&2
    exit 1
  fi
  printf -v "${__po_name}" '%s' "${__po_value}"
done
unset __po_name __po_value
