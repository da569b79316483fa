#!/usr/bin/env bash
# The GPU checks behind README's CUDA figures, as one script for a lent GPU machine:
# the CUDA tests, bench/train on CUDA (default and large batches), and iALS tuned on CUDA.
#   bash bench/gpu_check.sh DATA_ROOT OUT_DIR
# DATA_ROOT holds ml-100k-recbole/ and selfrec-amazon-beauty/ (../shared/data here).
set -u
DATA=${1:-../shared/data}
OUT=${2:-/tmp/recd-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_device_plan.py \
    tests/test_item2vec.py tests/test_sgns_graph.py tests/test_ials.py tests/test_mf_ncf.py >"$OUT/pytest.log" 2>&1
echo "pytest rc $?"; tail -5 "$OUT/pytest.log"
# Batches of 4096 targets are the default; bigger ones scale the collision caps down by the same factor.
# graph=false runs the eager kernels instead of the captured CUDA graph (trainer/models/sgns_graph.py).
for ds in ml-100k-recbole selfrec-amazon-beauty; do
    for sizes in "4096" "4096 --set graph=false" "16384 --set cap=16 --set neg_cap=0.1" \
                 "65536 --set cap=4 --set neg_cap=0.025"; do
        timeout 120 python3 -m bench.train --dataset "$DATA/$ds" --device cuda --repeats 3 --batch $sizes \
            >>"$OUT/train.log" 2>&1
        tail -1 "$OUT/train.log"
    done
done
timeout 120 python3 -m bench.train --dataset "$DATA/selfrec-amazon-beauty" --device cuda --repeats 3 --epochs 20 \
    --batch 16384 --set cap=16 --set neg_cap=0.1 >>"$OUT/train.log" 2>&1
tail -1 "$OUT/train.log"
timeout 150 python3 -m bench.tune --dataset "$DATA/selfrec-amazon-beauty" --preset ials --device cuda \
    --grid dim=64,128 --grid unobserved=0.01,0.03,0.1 >"$OUT/tune_beauty.log" 2>&1
tail -12 "$OUT/tune_beauty.log"
# Lit2Vec2's full size (3M users, 2.8M items, 90M positives): item2vec, the seed's 10 epochs, on the GPU
# (target: <= 10 minutes, host RSS <= 64 GiB). The events are drawn straight into training arrays: loading
# 90M events through Redis first would take hours (bench/scale.py measures that path at one tenth).
timeout 540 python3 bench/scale_fit.py --users 3000000 --items 2800000 --positives 90000000 --epochs 10 \
    --device cuda >"$OUT/scale_fit.log" 2>&1
echo "scale_fit rc $?"; tail -3 "$OUT/scale_fit.log"
