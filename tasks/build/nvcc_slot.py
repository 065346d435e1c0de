"""Run nvcc once one of N compile slots is free (called by nvcc_shim.sh).

Usage: python -S -I nvcc_slot.py SLOT_DIR N STARTED_FILE NVCC [ARGS...]

A slot is an flock on SLOT_DIR/slot-<i>; the lock's file stays open across the exec, so
the slot is held until nvcc exits, however it exits. The time the slot was taken goes to
STARTED_FILE, so the shim's log times the compile, not the wait. Standard library only:
this runs once per kernel, before deep_gemm's build can go on.
"""

import fcntl
import os
import random
import sys
import time

POLL_S = 0.02  # a wait costs a few syscalls per poll; nvcc runs take seconds


def take(slot_dir: str, n: int) -> int:
    os.makedirs(slot_dir, exist_ok=True)
    first = random.randrange(n)
    while True:
        for i in range(n):
            fd = os.open(os.path.join(slot_dir, f"slot-{(first + i) % n}"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        time.sleep(POLL_S)


def main(argv: list[str]) -> None:
    slot_dir, n, started_file, *command = argv[1:]
    fd = take(slot_dir, max(1, int(n)))
    os.set_inheritable(fd, True)
    with open(started_file, "w") as out:
        out.write(f"{time.time():.6f}\n")
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
