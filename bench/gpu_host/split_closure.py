"""Split vLLM's resolved requirement set (pip's --report) into what this run carries.

    python3 split_closure.py CLOSURE_JSON STUBS_OUT > real.txt

Three kinds: the torch family and its CUDA libraries and what the machine's /opt/torch/.venv
surely has (ON_MACHINE: made into wheels there, from the installed distributions); kernels
for other models and cards (HEAVY: gigabytes, never imported on this AWQ-on-Hopper path:
stubbed); the rest, carried as real wheels (printed, name==version).
"""

from __future__ import annotations

import json
import re
import sys

HEAVY = {
    "flashinfer-cubin", "flashinfer-python", "pynvvideocodec", "tilelang", "tokenspeed-mla",
    "tokenspeed-triton", "nvidia-cutlass-dsl", "nvidia-cutlass-dsl-libs-base",
    "nvidia-cutlass-dsl-libs-cu13", "quack-kernels", "humming-kernels", "cuda-toolkit",
    "nvidia-cuda-nvcc", "nvidia-cuda-tileiras", "nvidia-nvvm", "nvidia-cuda-cccl",
    "nvidia-cuda-crt", "cuda-tile", "opencv-python-headless", "z3-solver", "torchcodec",
    "fastsafetensors", "nvidia-cudnn-frontend", "kernels",
}  # fmt: skip
# torch's own requirements and the ML stack the image was built with (KINDS.md, FACTS.md): the
# machine's versions are used; what pip finds missing there is stubbed by stubs.py resolve.
# numba and llvmlite are carried instead (vLLM pins numba==0.65.0, the machine has 0.68.0; the
# measured run had them real, not stubbed).
ON_MACHINE = {
    "torch", "torchvision", "torchaudio", "triton", "vllm", "transformers",
    "tokenizers", "safetensors", "huggingface-hub", "hf-xet", "pillow", "sentencepiece",
    "tiktoken", "regex", "requests", "tqdm", "pyyaml", "packaging", "psutil", "sympy",
    "networkx", "mpmath", "jinja2", "markupsafe", "filelock", "fsspec", "typing-extensions",
    "protobuf", "urllib3", "idna", "certifi", "charset-normalizer",
    # Only with other kernels or tracing turned on: stubbed if the machine lacks them.
    "cuda-bindings", "cuda-core", "cuda-python", "cuda-pathfinder", "grpcio",
    "googleapis-common-protos",
}  # fmt: skip


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> int:
    with open(sys.argv[1]) as f:
        report = json.load(f)
    stubs = []
    for item in report["install"]:
        name, version = norm(item["metadata"]["name"]), item["metadata"]["version"]
        if name == "setuptools":
            continue  # the resolution took 81.0.0, vLLM wants <81: prepare.sh carries 80.9.0
        if name in HEAVY:
            stubs.append(f"{name}=={version}")
        elif name in ON_MACHINE or name.startswith(("nvidia-", "opentelemetry")):
            # nvidia-ml-py is small and needed by the exporter checks: carried.
            if name == "nvidia-ml-py":
                print(f"{name}=={version}")
            elif name.startswith("opentelemetry"):
                stubs.append(f"{name}=={version}")
        else:
            print(f"{name}=={version}")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(stubs) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
