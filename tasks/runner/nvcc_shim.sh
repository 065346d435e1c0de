#!/bin/sh
# nvcc shim for deep_gemm (DG_JIT_NVCC_COMPILER): compile each kernel once across
# processes. A kernel is keyed by its source and flags (the output path aside), as
# deep_gemm keys its cache. Results go to a store; a lock per key makes one process
# compile while others either wait (JITWARM_NVCC_WAIT=1) or are told "busy" at once
# (exit 75, and the key is written to JITWARM_BUSY_FLAG) so they can work on other
# kernels, and retry once $store/<key>.cubin exists. Each stored cubin has its sha256 beside it
# (<key>.sha256), checked before every reuse.
#
# Both layouts call it through a shell from the build directory: 0.1.x as
# `cd <tmp> && nvcc <tmp>/kernel.cu -cubin -o <out> ...`, 0.2.x (DeepJIT) as
# `cd <tmp> && nvcc <tmp>/kernel.cu --cubin --output-file <out> ...`; `nvcc --version`
# passes straight through, so DeepJIT hashes the real compiler's text.
#
# With JITWARM_NVCC_QUEUE set (a compile worker, not waiting), a kernel nobody builds is not
# compiled here: its source and argv go to that queue (tasks/runner/kernel_queue.py, which
# compiles it under the same lock) and the worker is told "busy" at once, so discovery never
# waits on nvcc. With JITWARM_RECIPES set, each kernel compiled here is also recorded there
# (tasks/state/recipes.py), so a later warm can compile it without deep_gemm finding it.
#
# Environment: JITWARM_REAL_NVCC (required), JITWARM_KSTORE (store directory).
real="${JITWARM_REAL_NVCC:?JITWARM_REAL_NVCC is not set}"
store="${JITWARM_KSTORE:-}"
src="$1"
case "$src" in *.cu) ;; *) exec "$real" "$@" ;; esac
out=""
prev=""
for a in "$@"; do
    case "$prev" in -o|--output-file) out="$a" ;; esac
    case "$a" in --output-file=*|-o=*) out="${a#*=}" ;; esac
    prev="$a"
done
if [ -z "$out" ] || [ -z "$store" ]; then exec "$real" "$@"; fi

# The build directory's paths differ per call; everything else must match.
sum=$( { cat "$src"; for a in "$@"; do
            case "$a" in "$src"|"$out"|--output-file=*|-o=*) ;; *) printf '%s\n' "$a" ;; esac
        done; } | sha256sum )
# The first 32 hex digits, by expansion: every process started here costs ~1 ms a kernel.
key=${sum%"${sum#????????????????????????????????}"}
# The argv with the build paths as placeholders, NUL-separated: a queue request or a recipe.
argv_of() {
    for a in "$@"; do
        case "$a" in
            "$src") a=@SRC@ ;;
            "$out") a=@OUT@ ;;
            --output-file=*) a=--output-file=@OUT@ ;;
            -o=*) a=-o=@OUT@ ;;
        esac
        printf '%s\0' "$a"
    done
}

[ -d "$store" ] || mkdir -p "$store"
queue="${JITWARM_NVCC_QUEUE:-}"
stub="${JITWARM_STUB_CUBIN:-}"
# A kernel queue request (kernel.cu, argv), written whole by the first process to need it.
request() {
    [ -e "$queue/$key" ] && return 0
    r="$queue/.$key.$$"
    mkdir -p "$r" && cp "$src" "$r/kernel.cu" && argv_of "$@" > "$r/argv" && mv -T "$r" "$queue/$key" 2>/dev/null
    rm -rf "$r"
}
# A stored cubin is used only when its recorded digest still matches: a damaged or planted one
# (garbage of any size) is dropped and compiled again instead of being copied into every rebuild.
stored() {
    [ -s "$store/$key.cubin" ] || return 1
    [ "$(sha256sum < "$store/$key.cubin")" = "$(cat "$store/$key.sha256" 2>/dev/null)" ] && return 0
    rm -f "$store/$key.cubin" "$store/$key.sha256"
    return 1
}

# A stub discovery worker (JITWARM_STUB_CUBIN, with a queue): the kernel is requested from the
# queue and the call goes on with a stub cubin (one empty kernel: both layouts load a cubin's
# only kernel, and the worker's calls are recorded in graphs that never run). The key beside the
# binary travels with the build directory into the worker's scratch cache, where the pool reads
# it to write the real entry once the queue has built it (tasks/runner/stubs.py).
if [ -n "$stub" ] && [ -n "$queue" ]; then
    if stored; then
        cp "$store/$key.cubin" "$out" || exit 1
    else
        request "$@"
        cp "$stub" "$out" || exit 1
    fi
    printf '%s\n' "$key" > "${out%/*}/jitwarm.key"
    [ -z "${JITWARM_STUB_LOG:-}" ] || printf '%s\n' "$key" >> "$JITWARM_STUB_LOG"
    exit 0
fi
if stored; then cp "$store/$key.cubin" "$out" && exit 0; fi

busy() {
    [ -n "${JITWARM_BUSY_FLAG:-}" ] && printf '%s\n' "$key" > "$JITWARM_BUSY_FLAG"
    echo "jitwarm: kernel $key is $1" >&2
    exit 75
}

# The recipe of a kernel compiled here (tasks/state/recipes.py): written whole, then renamed in;
# a recompile appends its cubin's digest (nvcc's output is not byte-stable).
recipe() {
    recipes="${JITWARM_RECIPES:-}"
    [ -n "$recipes" ] || return 0
    if [ -d "$recipes/$key" ]; then
        echo "$started $ended" > "$recipes/$key/seconds"
        echo "$digest" >> "$recipes/$key/digests"
        return 0
    fi
    r="$recipes/.$key.$$"
    if mkdir -p "$r" && cp "$src" "$r/kernel.cu" && argv_of "$@" > "$r/argv" && echo "$started $ended" > "$r/seconds" &&
            echo "$digest" > "$r/digests"; then
        mv -T "$r" "$recipes/$key" 2>/dev/null || echo "$digest" >> "$recipes/$key/digests"
    fi
    rm -rf "$r"
}

exec 9>"$store/$key.lock"
wait="${JITWARM_NVCC_WAIT:-1}"
if ! flock -n 9; then
    [ "$wait" != 1 ] && busy "being compiled by another worker"
    flock 9
fi
if stored; then cp "$store/$key.cubin" "$out"; exit $?; fi
if [ -n "$queue" ] && [ "$wait" != 1 ]; then
    request "$@"
    busy "queued for the compile queue"
fi
started=$(date +%s.%N)
"$real" "$@"
rc=$?
if [ "$rc" -eq 0 ] && [ -s "$out" ]; then
    ended=$(date +%s.%N)
    if cp "$out" "$store/.$key.$$" && sha256sum < "$store/.$key.$$" > "$store/.$key.sha.$$"; then
        read -r digest _ < "$store/.$key.sha.$$"
        recipe "$@"  # before the cubin is published: every stored cubin's digest is in its recipe
        mv -f "$store/.$key.sha.$$" "$store/$key.sha256" && mv -f "$store/.$key.$$" "$store/$key.cubin"
        echo "$key $started $ended ${JITWARM_RUN:-0}" >> "$store/compiled.log"
    fi
fi
exit "$rc"
