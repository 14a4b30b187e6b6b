#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (not part of CI: it takes tens of minutes).
#
#   scripts/mutation.sh                 # every core module below
#   scripts/mutation.sh voicebot/dialogue.py telephony/auth.py   # just these
#   MUTATION_JOBS=4 scripts/mutation.sh  # parallel test processes (default 2)
#
# mutmut lives in its own venv (.venv-mutation, gitignored) that sees the project's venv's
# packages, so the project's environment is never changed. The run happens in a copy of the
# tree under build/mutation, so the work tree stays untouched and can be edited meanwhile.
# Results: build/mutation/results.txt (one line per mutant; a module that runs alone, below,
# in build/mutation-<module>/results.txt) and a per-module summary printed at the end (the
# table in README, "Testing", comes from it). MUTATION_WORK moves build/mutation elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CORE_MODULES=(
  voicebot/privacy.py telephony/codecs.py voicebot/dialogue.py voicebot/understanding.py
  voicebot/queues/sqlite.py voicebot/queues/records.py telephony/auth.py voicebot/asr.py
  voicebot/vad.py voicebot/console.py voicebot/accounts.py
)
# The fast tests that speak for those modules (the real-model tests are left out).
TESTS=(
  tests/test_privacy.py tests/test_privacy_en.py tests/test_privacy_defaults.py
  tests/test_codecs.py tests/test_dialogue.py tests/test_understanding.py
  tests/test_queues.py tests/test_auth.py tests/test_audiohook.py tests/test_asr_logic.py
  tests/test_vad.py
  tests/test_console.py tests/test_console_security.py tests/test_core_regressions.py
  tests/test_promises.py tests/test_mutation_survivors.py tests/test_dialogue_behaviour.py
  tests/test_console_callbacks.py tests/test_callbacks.py tests/test_waiting.py tests/test_wait.py
  tests/test_wire_promises.py tests/test_console_authorisation.py tests/test_accounts_behaviour.py
  tests/test_queue_behaviour.py
  tests/test_privacy_behaviour.py
  tests/test_auth_behaviour.py
  tests/test_vad_behaviour.py tests/test_asr_streaming_behaviour.py tests/test_understanding_rules.py
)
MODULES=("${@:-${CORE_MODULES[@]}}")

# -- the tool, in its own venv -------------------------------------------------------------
VENV=.venv-mutation
if [[ ! -x $VENV/bin/mutmut ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "mutmut>=3.3,<4"
fi
PROJECT_SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
MUTMUT_SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$PROJECT_SITE')" >"$MUTMUT_SITE/_project_venv.pth"

# Modules that run alone, with their own tests. telephony/codecs.py builds its G.711 tables at
# import: mutmut's stats pass credits those calls to whichever test happens to run first, and
# every mutant process is forked from one that imported the module already, so a mutant in a
# table builder never reaches the tables. tests/test_codecs_behaviour.py therefore calls the
# builders themselves (mutmut maps those calls to it, and the mutant is live in them); the
# codec run's own selection keeps the first test a codec test and its stats pass short.
declare -A OWN_TESTS=(
  [telephony/codecs.py]="tests/test_codecs.py tests/test_codecs_behaviour.py"
)
SHARED_MODULES=()
for m in "${MODULES[@]}"; do [[ -n ${OWN_TESTS[$m]:-} ]] || SHARED_MODULES+=("$m"); done

# mutate WORKDIR "MODULES..." TESTS...: one mutmut run in its own copy of the tree
mutate() {
  local work=$1 modules=$2
  shift 2
  local existing_tests=() t
  for t in "$@"; do [[ -f $t ]] && existing_tests+=("$t"); done
  rm -rf "$work"
  mkdir -p "$work"
  git ls-files -co --exclude-standard voicebot telephony tests intents pyproject.toml |
    tar -cf - --files-from=- | tar -xf - -C "$work"
  ln -sfn "$ROOT/var" "$work/var"
  {
    echo "[mutmut]"
    printf 'source_paths =\n    voicebot\n    telephony\n'
    printf 'only_mutate =\n'
    printf '    %s\n' $modules
    echo "also_copy = intents"
    printf 'pytest_add_cli_args_test_selection =\n'
    printf '    %s\n' "${existing_tests[@]}"
    printf 'pytest_add_cli_args =\n    -m\n    not model\n    -p\n    no:cacheprovider\n'
  } >"$work/setup.cfg"
  # pyproject's [tool.mutmut] would win over setup.cfg; the project has none, keep it so.
  ! grep -q '^\[tool.mutmut\]' "$work/pyproject.toml"
  (
    cd "$work"
    "$ROOT/$VENV/bin/mutmut" run --max-children "${MUTATION_JOBS:-2}" || true
    "$ROOT/$VENV/bin/mutmut" results --all true >results.txt 2>&1 || true
  )
}

# -- the runs, each in a copy of the tree ---------------------------------------------------
WORK=${MUTATION_WORK:-build/mutation}
RESULTS=()
if ((${#SHARED_MODULES[@]})); then
  mutate "$WORK" "${SHARED_MODULES[*]}" "${TESTS[@]}"
  RESULTS+=("$WORK/results.txt")
fi
for m in "${MODULES[@]}"; do
  [[ -n ${OWN_TESTS[$m]:-} ]] || continue
  own_work="$WORK-$(basename "$m" .py)"
  # shellcheck disable=SC2086  # the test list is space-separated paths
  mutate "$own_work" "$m" ${OWN_TESTS[$m]}
  RESULTS+=("$own_work/results.txt")
done

# -- per-module summary --------------------------------------------------------------------
python3 - "${RESULTS[@]}" <<'PY'
import re, sys
from collections import Counter, defaultdict

rows: dict[str, Counter] = defaultdict(Counter)
lines = [line for path in sys.argv[1:] for line in open(path, encoding="utf-8")]
for line in lines:
    m = re.match(r"\s*([\w.]+)\.x[_ǁ].*__mutmut_\d+: (.+)$", line.strip())
    if not m:
        continue
    module, status = m.group(1), m.group(2).strip()
    rows[module][status] += 1
print(f"{'module':32} {'mutants':>8} {'killed':>7} {'survived':>9} {'other':>6} {'score':>6}")
for module in sorted(rows):
    c = rows[module]
    total = sum(c.values())
    killed = c["killed"] + c["timeout"]
    survived = c["survived"]
    other = total - killed - survived
    score = killed / (killed + survived) if killed + survived else 0.0
    print(f"{module:32} {total:8} {killed:7} {survived:9} {other:6} {score:6.0%}")
print("other = no tests / skipped / suspicious (see results.txt); score = killed / (killed + survived)")
PY
