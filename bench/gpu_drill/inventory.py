# GPU drill (issue 5, part 3): the checks run on this machine through testinfra's local backend,
# against processes that hold GPU memory the way the plan says the two services would.
# bench/gpu_drill/run.sh writes plan.json into LLMHOST_DRILL_CONFIG and passes --service-pids.
import os

_model = {"source": "local", "path": "/nonexistent/drill-model"}

hosts = [
    (
        "@local",
        {
            "llmhost_config_dir": os.environ.get("LLMHOST_DRILL_CONFIG", "/tmp/llmhost-drill"),
            "llmhost_services": [
                {
                    "name": "coder",
                    "served_model_name": "coder",
                    "port": 8001,
                    "model": _model,
                    "max_model_len": 16384,
                },
                {
                    "name": "general",
                    "served_model_name": "general",
                    "port": 8002,
                    "model": _model,
                    "max_model_len": 16384,
                },
            ],
        },
    ),
]
