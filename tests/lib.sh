# Shared helpers for the shell test suites (sourced): `check NAME CMD...` runs one check and
# prints "ok - NAME" or "not ok - NAME" with the command's output; `finish` prints the
# "N passed, N failed" line and sets the exit status.
passed=0
failed=0
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "ok - $name"
        passed=$((passed + 1))
    else
        echo "not ok - $name"
        printf '%s\n' "$out" | sed 's/^/    /' | head -40
        failed=$((failed + 1))
    fi
}
contains() { grep -qF -- "$2" <<<"$1" || { echo "expected to find: $2"; echo "in: $1"; return 1; }; }
lacks() { ! grep -qF -- "$2" <<<"$1" || { echo "did not expect: $2"; return 1; }; }
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ]
}
