"""Holds GPU memory the way a vLLM instance with --gpu-memory-utilization FRACTION would.

vLLM budgets FRACTION x the GPU's total memory (as CUDA reports it) for everything its process
holds, the CUDA context included; this process does the same, then waits. SIGUSR1 makes it grab
GROW_GIB more (the planted overshoot). It writes READY_FILE each time it has settled.
Start holders one at a time, as vLLM instances must be: the context size is measured as the
change in the GPU's used memory around this process's CUDA initialisation.
"""

import argparse
import os
import signal
import time

import pynvml
import torch

GIB = 1024**3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fraction", type=float, required=True)
    parser.add_argument("--grow-gib", type=float, default=4.0)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    before = pynvml.nvmlDeviceGetMemoryInfo(handle).used
    torch.empty(1, device="cuda")
    context = pynvml.nvmlDeviceGetMemoryInfo(handle).used - before
    total = torch.cuda.mem_get_info()[1]
    held = [torch.empty(int(args.fraction * total) - context, dtype=torch.uint8, device="cuda")]
    torch.cuda.synchronize()

    def settle(note: str) -> None:
        listed = {
            p.pid: p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        }
        usage = listed.get(os.getpid())
        print(
            f"holder pid {os.getpid()}: {note}: NVML lists it with "
            f"{usage / GIB if usage is not None else float('nan'):.2f} GiB "
            f"(CUDA context {context / GIB:.2f} GiB); plan {args.fraction} x CUDA total "
            f"{total / GIB:.2f} GiB = {args.fraction * total / GIB:.2f} GiB",
            flush=True,
        )
        with open(args.ready_file, "w") as f:
            f.write(f"{note}\n")

    def grow(_signum: int, _frame: object) -> None:
        held.append(torch.empty(int(args.grow_gib * GIB), dtype=torch.uint8, device="cuda"))
        torch.cuda.synchronize()
        settle(f"grew by {args.grow_gib} GiB")

    signal.signal(signal.SIGUSR1, grow)
    settle("holding")
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
