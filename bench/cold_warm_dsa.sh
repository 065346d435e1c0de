#!/usr/bin/env bash
# On a GPU host: bench/prove_cold_warm.sh over V3.2 and GLM-5 (their GEMMs replayed by
# sglang's executors), then bench/indexer_replay.py, sglang's indexer calls restated, over the same
# root: both must report 0 new entries. The caller installs the wheels (the device run's pip prefix).
R=${RES:-$OUT}
bash bench/prove_cold_warm.sh dsa deepseek-v3.2 glm-5-fp8
W=/tmp/w-dsa
ls $W/cache/cache | grep -i mqa | head -40 | tee -a $R/log
for d in $(ls -d $W/cache/cache/*mqa* | head -3); do echo "== $d"; cat $d/kernel.cu; done > $R/indexer_sources.txt 2>&1
DG_JIT_CACHE_DIR=$W/cache timeout 60 python3 bench/indexer_replay.py 64 32 --tp 8 > $R/indexer_replay.json 2>$R/indexer_replay.err; echo "indexer replay rc $?" | tee -a $R/log
head -c 3000 $R/indexer_replay.json | tee -a $R/log; tail -5 $R/indexer_replay.err | tee -a $R/log
