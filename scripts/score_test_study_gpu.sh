#!/usr/bin/env bash
# Score the medium grid's published runs on the large test study on a machine with a GPU and many cores:
# the run behind results/medium/test-study (`make test-study` does the same on a CPU, in about two hours
# at 400 patients on the 2-core machine).
#
#   scripts/score_test_study_gpu.sh OUT [PATIENTS] [WORKERS]
#
# Generates the study (one process per core), scores every run CRF off and on (WORKERS runs side by
# side, one CPU thread each, sharing the GPU for the network in bf16), and packs results/medium/test-study
# into OUT as one archive per network, with the log and a memory trace. The machine needs python3 with
# torch (CUDA), numpy, scipy, pandas, matplotlib, seaborn, tqdm, safetensors and pillow; pydicom, nibabel,
# monai and pydensecrf may come as SITE_TAR, a .tar.xz of a site-packages folder built for its Python.
# Each worker holds the study's slices, probabilities and masks (about 22 MB a patient at the peak,
# measured): WORKERS x PATIENTS x 22 MB must fit in memory. LIMIT (seconds, default 520) stops the
# scoring; runs finished by then are kept and packed. PYTHON names the interpreter (default python3).
set -uo pipefail
out=${1:?usage: $0 OUT [PATIENTS] [WORKERS]}
patients=${2:-400}
workers=${3:-10}
mkdir -p "$out"
if [ -n "${SITE_TAR:-}" ]; then
    mkdir -p /tmp/site && tar xJf "$SITE_TAR" -C /tmp/site || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
(nvidia-smi -L; nproc; free -g; "${PYTHON:-python3}" -V) 2>&1 | tee "$out/machine.txt"
"${PYTHON:-python3}" -c "import torch, lungseg, pydensecrf, monai, pydicom, nibabel
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'monai', monai.__version__)" \
    2>&1 | tee -a "$out/machine.txt" || exit 1
(while true; do echo "$(date +%s) $(free -m | awk '/Mem:/ {print $3, $7}')"; sleep 10; done) > "$out/memory.txt" &
trace=$!
started=$(date +%s)
timeout "${LIMIT:-520}" "${PYTHON:-python3}" scripts/run_test_study.py --profile medium --patients "$patients" --precision bf16 \
    --workers "$workers" --generate-workers "$(nproc)" ${RESCORE:+--rescore} 2>&1 | tee "$out/log.txt"
echo "scoring exit status ${PIPESTATUS[0]} after $(( $(date +%s) - started )) s" | tee -a "$out/log.txt"
kill $trace
cp data/phantom-medium-test/manifest.json "$out/manifest.json" 2>/dev/null
for model in attention unet; do
    tar cf "$out/test-study-$model.tar" results/medium/test-study/runs/$model-*
done
tar cf "$out/test-study-tables.tar" results/medium/test-study/*.json results/medium/test-study/*.csv
ls -l "$out"
