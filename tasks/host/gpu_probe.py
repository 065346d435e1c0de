"""Print the first visible GPU's SM count as JSON, via the CUDA driver API (no torch).

Run as a child (`python -m tasks.host.gpu_probe`) so a wedged driver cannot hang the caller.
"""

import ctypes
import json
import sys

_MULTIPROCESSOR_COUNT = 16  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT


def main() -> int:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 1
    device, count = ctypes.c_int(), ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return 1
    if cuda.cuDeviceGetAttribute(ctypes.byref(count), _MULTIPROCESSOR_COUNT, device) != 0:
        return 1
    json.dump({"sms": count.value}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
