#!/usr/bin/env bash
# On a GPU device (sgl-deep-gemm 0.1.2 wheels in .whl/, installed by the caller): a cold `doit warm` of
# the named shipped models (bench/cold_warm_shipped.py), then `doit list --status`, `doit env`,
# `doit plan`, then bench/sglang_replay.py, sglang's own warmup executors restated, over every GEMM
# shape of those targets: it must report 0 new entries.
# Usage: bash bench/prove_cold_warm.sh NAME MODEL... (writes NAME.json, NAME-plan.txt, NAME-replay.json and log under $RES, else $OUT)
name=$1; shift
R=${RES:-$OUT}  # results folder: $RES when the caller packs many files into one
W=/tmp/w-$name
timeout 200 python3 bench/cold_warm_shipped.py --work $W --models "$@" --out $R/$name.json > $R/$name-cold.out 2>&1; echo "[$name] cold rc $?" | tee -a $R/log
python3 -c "import json; r=json.load(open('$R/$name.json'))['cold_warm']; print({k: r.get(k) for k in ('rc','wall_s','entries','pool_summary','replay_new_entries','all_ok','floor_s')}); print(r.get('output_tail','')[-1500:])" 2>&1 | tee -a $R/log
export JITWARM_MODELS_DIR=$W/models DG_JIT_CACHE_DIR=$W/cache JITWARM_DOIT_DB=$W/doit.db
timeout 60 python3 -m doit list --status 2>&1 | tee -a $R/log
timeout 60 python3 -m doit env 2>&1 | tee -a $R/log
timeout 60 python3 -m doit plan > $R/$name-plan.txt 2>&1
ls $W/cache/cache | sed 's/\.[0-9a-f]*$//' | sort | uniq -c | tee -a $R/log
python3 - "$W/models" > /tmp/$name-gemms.json <<'PY'
import json, sys
from pathlib import Path
from tasks.plan import registry, targets
from tasks.host import gpu
ts = targets.expand(registry.load(Path(sys.argv[1])), environ={}, facts=targets.Facts(gpu_memory_mib=gpu.total_mib()))
ws = targets.shared_works(ts)
print(json.dumps({"shapes": [{"kind": w.shape.kind.value, "n": w.shape.n, "k": w.shape.k, "groups": w.shape.groups,
                              "m_values": list(w.m_values)} for w in ws.values() if not w.shape.kind.indexer]}))
PY
timeout ${REPLAY_TIMEOUT_S:-300} python3 bench/sglang_replay.py /tmp/$name-gemms.json > $R/$name-replay.json 2>$R/$name-replay.err; echo "[$name] gemm replay rc $?" | tee -a $R/log
python3 -c "import json; r=json.load(open('$R/$name-replay.json')); print({k: v for k, v in r.items() if k != 'new' or v})" 2>&1 | tee -a $R/log
tail -3 $R/$name-replay.err | tee -a $R/log
