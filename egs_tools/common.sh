# Small shell helpers shared by every recipe's run.sh. Source it:  . ../../egs_tools/common.sh
#
#   log "message"        timestamped message with the calling script and line, on stderr
#   stage_done NAME      true if the .done marker NAME exists (the step already finished)
#   mark_done NAME       creates the marker after a step finished (on node 0 only)
#   run_stage N          true when stage N lies in [stage, stop_stage]
#   dmtts_dist ARGS...   `dmtts ARGS` on num_gpus processes per node x num_nodes nodes (torchrun)
#   main_node            true on node 0, which alone runs the single-process steps
#   wait_done NAME...    on the other nodes: wait until node 0 has marked NAME done
#
# Markers live in ${done_dir:-exp/.done}; delete one to redo its step.
#
# Multi-node runs: start the same run.sh on every node with the same --num-nodes, --master-addr
# and --master-port and that node's --node-rank. The directory of the recipe (data/, exp/) must
# be on a filesystem every node sees: ranks read each other's shards and node 0 merges them, and
# the other nodes learn from node 0's markers that a single-process step has finished.

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]:-main}) $*" >&2
}

__done_marker() {
  echo "${done_dir:-exp/.done}/$1.done"
}

stage_done() {
  [ -f "$(__done_marker "$1")" ]
}

mark_done() {
  # Only node 0 writes markers: every node decides from the same markers which distributed steps
  # to run, and a marker means node 0 has also finished its part (e.g. the merge of the shards).
  main_node || return 0
  local marker
  marker="$(__done_marker "$1")"
  mkdir -p "$(dirname "${marker}")"
  date '+%Y-%m-%d %H:%M:%S' > "${marker}"
}

run_stage() {
  [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]
}

dmtts_dist() {
  local nproc=${num_gpus:-1} nnodes=${num_nodes:-1}
  if [ "${nnodes}" -gt 1 ]; then
    # static rendezvous at master_addr:master_port; every node runs the same command
    torchrun --nnodes "${nnodes}" --node-rank "${node_rank:-0}" --master-addr "${master_addr}" \
      --master-port "${master_port}" --nproc-per-node "${nproc}" -m dmtts.cli "$@"
  elif [ "${nproc}" -gt 1 ]; then
    torchrun --standalone --nproc-per-node "${nproc}" -m dmtts.cli "$@"
  else
    dmtts "$@"
  fi
}

main_node() {
  [ "${node_rank:-0}" -eq 0 ]
}

wait_done() {
  main_node && return 0
  local name waited=0
  for name in "$@"; do
    until stage_done "${name}"; do
      [ $((waited % 300)) -eq 0 ] && log "node ${node_rank}: waiting for node 0 to finish '${name}'"
      sleep 10
      waited=$((waited + 10))
    done
  done
}
