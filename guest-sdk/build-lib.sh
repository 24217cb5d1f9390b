# Shared by guest-sdk/{js,python,c}/build.sh, which source it: their arguments, the cache key
# of a build's inputs, reuse of an unchanged build, and the copy to where it was asked for.
#
# A build whose inputs (the plugin folder, the language's helpers and tools, the WIT
# contract, this file) did not change is reused from $SWITCHBOARD_GUEST_TARGET_DIR/LANG/out,
# so repeated builds are fast and byte-identical.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
guest_target="${SWITCHBOARD_GUEST_TARGET_DIR:-$root/target/guests}"

# guest_build_init LANG ENTRY PLUGIN_DIR OUT.wasm [INPUT...]
# Checks PLUGIN_DIR holds ENTRY (unless it is empty) and sets: src, out, name, work (this language's build
# folder), key (the inputs' digest), built (the cached component) and stage (a scratch
# folder for this build). INPUTs are the language's own files that shape the output.
guest_build_init() {
    if [ $# -lt 4 ]; then
        echo "usage: $(basename "$(dirname "$0")")/build.sh PLUGIN_DIR OUT.wasm" >&2
        exit 2
    fi
    local lang="$1" entry="$2"
    src="$(cd "$3" && pwd)"
    out="$4"
    shift 4
    name="$(basename "$src")"
    work="$guest_target/$lang"
    [ -z "$entry" ] || [ -f "$src/$entry" ] || { echo "$src/$entry: no such file" >&2; exit 1; }
    key="$( (cd "$src" && find . -type f ! -name '*.wasm' ! -name '*.toml' ! -name '*.md' \
                 ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
             cat "$@" "$root"/guest-sdk/wit/0.1.0/*.wit "${BASH_SOURCE[0]}" | sha256sum) \
           | sha256sum | cut -c1-16)"
    built="$work/out/$name-$key.wasm"
    stage="$work/stage/$name-$key"
}

# guest_build_finish: keeps the last few builds of the plugin and copies the one built
# (or reused) to OUT, whose path it prints.
guest_build_finish() {
    rm -rf "$stage"
    ls -t "$work/out/$name"-*.wasm | tail -n +5 | xargs -r rm -f
    mkdir -p "$(dirname "$out")"
    cp "$built" "$out"
    echo "$out"
}
