#!/usr/bin/env bash
# Offline checks of the Nix files, for CI machines with only Debian's nix-bin
# (apt-get install -y --no-install-recommends nix-bin) and no network:
#
#   1. every .nix file in the repository parses (nix-instantiate --parse);
#   2. when the nixos-eval tool and its mirrors (or an already built mini tree) are on the
#      machine, the NixOS module is evaluated with every nix/tests/eval-*.nix:
#      eval-bad-*.nix must fail with exit status 2 (failed assertions), the others must pass
#      with status 0 and no NixOS warning; each "# expect: TEXT" line of a configuration must
#      appear in the evaluator's output (an assertion message or a rendered line).
#      Otherwise this part prints a SKIP line.
#
# Usage: nix/check.sh            (from anywhere; exit 0 ok, 1 a check failed, 3 no nix-bin)
# Environment: NIXOS_EVAL_SH   path of nixos-eval.sh (default: ../shared/tools/nixos-eval.sh
#                              next to the checkout)
#              NIXOS_EVAL_MIRRORS, NIXOS_EVAL_MINI   passed on to nixos-eval.sh
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 3
failed=0

command -v nix-instantiate >/dev/null || {
  echo "FAIL: nix-instantiate not found (apt-get install -y --no-install-recommends nix-bin)" >&2
  exit 3
}
# A dummy store: parsing needs no store, and this works unprivileged and without /nix.
NIXI=(nix-instantiate --store dummy:// --option build-users-group '')

# ---- 1. syntax of every .nix file (tracked or new; ignored ones such as result/ are skipped)
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.nix' | sort -u)
else
  mapfile -t files < <(find . -name .git -prune -o -name target -prune -o -name '*.nix' -type f -print | sed 's|^\./||' | sort)
fi
parsed=0
for f in "${files[@]}"; do
  [ -f "$f" ] || continue # listed by git but deleted in the work tree
  if err="$("${NIXI[@]}" --parse "$f" 2>&1 >/dev/null)"; then
    parsed=$((parsed + 1))
  else
    echo "FAIL: syntax error in $f:" >&2
    echo "$err" >&2
    failed=1
  fi
done
echo "parse: $parsed of ${#files[@]} .nix files parse"

# ---- 2. evaluation of the NixOS module against the real NixOS module system (nixos-eval.sh)
EVAL="${NIXOS_EVAL_SH:-$ROOT/../shared/tools/nixos-eval.sh}"
mirrors="${NIXOS_EVAL_MIRRORS:-$(find / -maxdepth 3 -type d -name .mirror 2>/dev/null | head -n 1)}"
mini="${NIXOS_EVAL_MINI:-/var/tmp/nixos-mini}"
have_trees=0
if [ -n "$mirrors" ] && [ -d "$mirrors/nix-community+nixpkgs.lib/repo" ] &&
  [ -d "$mirrors/RossComputerGuy+nixpkgs-llvm-ws/repo" ]; then
  have_trees=1
elif [ -f "$mini/.nixos-eval/stamp" ]; then
  have_trees=1
fi

if [ ! -x "$EVAL" ]; then
  echo "SKIP: module evaluation: no nixos-eval.sh at $EVAL (set NIXOS_EVAL_SH)"
elif [ "$have_trees" = 0 ]; then
  echo "SKIP: module evaluation: the nixos-eval mirrors (nix-community/nixpkgs.lib," \
    "RossComputerGuy/nixpkgs-llvm-ws) are not on this machine and no mini tree is built"
else
  out="$(mktemp)"
  trap 'rm -f "$out"' EXIT
  for cfg in nix/tests/eval-*.nix; do
    case "$(basename "$cfg")" in
      eval-bad-*) want=2 ;;
      *) want=0 ;;
    esac
    "$EVAL" . "$cfg" >"$out" 2>&1
    rc=$?
    if [ "$rc" = 1 ]; then
      # nixos-eval.sh refreshes files in its shared mini tree on every run: a run of another
      # session at the same moment can make one evaluation fail. A real error fails twice.
      sleep 2
      "$EVAL" . "$cfg" >"$out" 2>&1
      rc=$?
    fi
    problems=()
    [ "$rc" = "$want" ] || problems+=("exit status $rc, expected $want")
    if [ "$want" = 0 ] && grep -q '^===== NixOS warnings' "$out"; then
      problems+=("NixOS warnings")
    fi
    while IFS= read -r expect; do
      grep -qF -- "$expect" "$out" || problems+=("missing in output: $expect")
    done < <(sed -n 's/^# expect: //p' "$cfg")
    if [ ${#problems[@]} = 0 ]; then
      echo "eval: ok   $cfg (exit $rc)"
    else
      echo "FAIL: eval $cfg: $(printf '%s; ' "${problems[@]}")" >&2
      sed -e '/^warning: the group .nixbld./d' "$out" | tail -n 60 >&2
      failed=1
    fi
  done
fi

if [ "$failed" = 0 ]; then echo "nix/check.sh: ok"; else echo "nix/check.sh: FAILED" >&2; fi
exit "$failed"
