#!/usr/bin/env bash
# Issue 28 on a GPU device (sgl-deep-gemm 0.1.2 wheels in .whl/): a cold warm of V3.2 and GLM-5 with the
# indexer kernels (bench/cold_warm_shipped.py), then bench/indexer_replay.py and bench/sglang_replay.py over
# that root: both must report 0 new entries. Writes JSON and a log under $OUT. Not yet run: no device came.
rm -rf /tmp/site && python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export PATH=/tmp/site/bin:$PATH
nvidia-smi --query-gpu=name,memory.total --format=csv | tee $OUT/log
python3 -c "import deep_gemm, torch; print('dg', deep_gemm.__file__, torch.__version__, deep_gemm.get_num_sms())" 2>&1 | tee -a $OUT/log
W=/tmp/w28
timeout 150 python3 bench/cold_warm_shipped.py --work $W --models deepseek-v3.2 glm-5-fp8 --out $OUT/cold_warm_dsa.json > $OUT/cold.out 2>&1; echo "cold rc $?" | tee -a $OUT/log
python3 -c "import json; r=json.load(open('$OUT/cold_warm_dsa.json'))['cold_warm']; print({k: r.get(k) for k in ('rc','wall_s','entries','pool_summary','replay_new_entries','all_ok','floor_s')}); print(r.get('output_tail','')[-3000:])" 2>&1 | tee -a $OUT/log
JITWARM_MODELS_DIR=$W/models DG_JIT_CACHE_DIR=$W/cache JITWARM_DOIT_DB=$W/doit.db timeout 60 python3 -m doit list --status 2>&1 | tee -a $OUT/log
JITWARM_MODELS_DIR=$W/models DG_JIT_CACHE_DIR=$W/cache JITWARM_DOIT_DB=$W/doit.db timeout 60 python3 -m doit env 2>&1 | tee -a $OUT/log
JITWARM_MODELS_DIR=$W/models DG_JIT_CACHE_DIR=$W/cache timeout 60 python3 -m doit plan > $OUT/plan.txt 2>&1
ls $W/cache/cache | sed 's/\.[0-9a-f]*$//' | sort | uniq -c | tee -a $OUT/log
ls $W/cache/cache | grep -i mqa | head -40 | tee -a $OUT/log
for d in $(ls -d $W/cache/cache/*mqa* | head -3); do echo "== $d"; cat $d/kernel.cu; done > $OUT/indexer_sources.txt 2>&1
DG_JIT_CACHE_DIR=$W/cache timeout 60 python3 bench/indexer_replay.py 64 32 --tp 8 > $OUT/indexer_replay.json 2>$OUT/indexer_replay.err; echo "indexer replay rc $?" | tee -a $OUT/log
cat $OUT/indexer_replay.json | head -c 3000 | tee -a $OUT/log; tail -5 $OUT/indexer_replay.err | tee -a $OUT/log
python3 - <<'PY' > /tmp/gemmplan.json
import json, os
from tasks.plan import registry, targets
from tasks.host import gpu
ts = targets.expand(registry.load(__import__('pathlib').Path('/tmp/w28/models')), environ={}, facts=targets.Facts(gpu_memory_mib=gpu.total_mib()))
ws = targets.shared_works(ts)
print(json.dumps({"shapes": [{"kind": w.shape.kind.value, "n": w.shape.n, "k": w.shape.k, "groups": w.shape.groups, "m_values": list(w.m_values)} for w in ws.values() if not w.shape.kind.indexer]}))
PY
DG_JIT_CACHE_DIR=$W/cache timeout 60 python3 bench/sglang_replay.py /tmp/gemmplan.json > $OUT/sglang_replay.json 2>$OUT/sglang_replay.err; echo "gemm replay rc $?" | tee -a $OUT/log
python3 -c "import json; r=json.load(open('$OUT/sglang_replay.json')); r.pop('new',None) if not r['new'] else None; print(r)" 2>&1 | tee -a $OUT/log
