#!/usr/bin/env bash
# GPU path, on a CUDA machine: a worker on the gpu queue (embedded store and broker, no server needed),
# a `device: "cuda"` job with fp16 and int8_dynamic on torchvision resnet18, and the GPU measurements.
#   bash bench/gpu_check.sh            (from the repository root, after `make install`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export SQUEEZE_HOME=$(mktemp -d) SQUEEZE_BOOTSTRAP_API_KEY=sqz_gpu_check SQUEEZE_MEASURE_SECONDS=1
PORT=${PORT:-8765}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'; print('GPU:', torch.cuda.get_device_name(0))"
$PY -m app.serve --no-worker --port "$PORT" > "$SQUEEZE_HOME/api.log" 2>&1 &
SQUEEZE_WORKER_QUEUES=cpu,gpu $PY -m workers.main --name gpu-check > "$SQUEEZE_HOME/worker.log" 2>&1 &
$PY - "$PORT" <<'PYEOF'
import json, sys, time, tempfile, httpx, torch, torchvision
from safetensors.torch import save_file
url = f"http://127.0.0.1:{sys.argv[1]}"
api = httpx.Client(base_url=url, headers={"Authorization": "Bearer sqz_gpu_check"}, timeout=120)
for _ in range(240):
    try:
        if api.get("/readyz").status_code == 200: break
    except httpx.HTTPError: pass
    time.sleep(0.5)
path = tempfile.mktemp(suffix=".safetensors")
save_file(torchvision.models.resnet18(num_classes=10).state_dict(), path,
          metadata={"arch": "resnet18", "arch_kwargs": json.dumps({"num_classes": 10})})
model = api.post("/v1/models", files={"file": open(path, "rb")}, data={"input_shape": "[1,3,224,224]"}).json()
while (model := api.get(f"/v1/models/{model['id']}").json())["status"] == "pending": time.sleep(0.5)
assert model["status"] == "ready", model
for scheme in ("fp16", "int8_dynamic"):
    job = api.post("/v1/jobs", json={"model_id": model["id"], "device": "cuda",
                                     "recipe": {"steps": [{"method": "quantize", "scheme": scheme}]}}).json()
    assert job["queue"] == "gpu", job
    while (job := api.get(f"/v1/jobs/{job['id']}").json())["status"] in ("queued", "running"): time.sleep(1)
    if job["status"] != "succeeded":
        print(scheme, job["status"], job["error"]); continue
    base, step = job["results"]["baseline"], job["results"]["steps"][0]
    m = step["measurement"]
    print(f"{scheme:13s} device={job['device_used']} gpu={m['env'].get('gpu')} "
          f"b1 {base['latency_ms']['b1']['p50']:.2f}->{m['latency_ms']['b1']['p50']:.2f} ms "
          f"b32 {base['latency_ms']['bN']['p50']:.2f}->{m['latency_ms']['bN']['p50']:.2f} ms "
          f"speedup b1 {step['speedup_b1']:.2f}x b32 {step['speedup_bN']:.2f}x size {step['size_ratio']:.2f}x "
          f"peak mem {m['peak_mem_bytes']} verdict {step['verdict']}")
PYEOF
