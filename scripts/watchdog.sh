# shellcheck shell=bash
# Sourced by the GPU recipes: watchdog RUN_DIR DEADLINE writes RUN_DIR/STOP once the deadline (epoch seconds)
# passes and the run has started (the trainer clears a STOP file left from before it began), so an overrunning
# stage ends cleanly with weights.
watchdog() {
  while [ "$(date +%s)" -lt "$2" ] || [ ! -f "$1/metrics.jsonl" ]; do sleep 1; done
  echo "watchdog: $1 past its deadline, stopping it"; touch "$1/STOP"
}
