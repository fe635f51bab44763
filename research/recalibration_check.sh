#!/usr/bin/env bash
# Does `hfr calibrate` fix a threshold that the held-out tenth of the training images set badly?
# The seed-1 bottle models of the 0.12 default runs (README, "The default verdict": 7 of 20 good
# test bottles flagged) are recalibrated on one half of the good test bottles and judged on the
# other half and every defective bottle, then the halves swap; the original models are judged
# on the same images. Needs those models in /tmp/d12s1 (`hfr reproduce mvtec ... --seed 1`).
#   bash research/recalibration_check.sh | grep flagged > research/results/recalibration/bottle_seed1.txt
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository root, beside ../shared
G=../shared/datasets/mvtec_ad/bottle/test/good
R=/tmp/recal; rm -rf $R; mkdir -p $R/first $R/second $R/defective
for f in $(ls $G | head -10); do ln -s $(realpath $G/$f) $R/first/$f; done
for f in $(ls $G | tail -10); do ln -s $(realpath $G/$f) $R/second/$f; done
for d in broken_large broken_small contamination; do for f in $(ls ../shared/datasets/mvtec_ad/bottle/test/$d); do ln -s $(realpath ../shared/datasets/mvtec_ad/bottle/test/$d/$f) $R/defective/${d}_$f; done; done
for enc in mobilenetv2 efficientnet_lite0; do
  M=/tmp/d12s1/$enc/models/bottle
  for half in first second; do
    other=$([ $half = first ] && echo second || echo first)
    hfr -q calibrate --model $M $R/$half --output $R/${enc}_$half > $R/${enc}_$half.json
    hfr -q predict --model $R/${enc}_$half $R/$other $R/defective --output $R/pred_${enc}_$half --no-overlays
    hfr -q predict --model $M $R/$other $R/defective --output $R/orig_${enc}_$other --no-overlays
  done
done
python - <<'PY'
import csv
R = "/tmp/recal"
for enc in ["mobilenetv2", "efficientnet_lite0"]:
    for half, other in [("first", "second"), ("second", "first")]:
        for name, folder in [("held-out tenth", f"orig_{enc}_{other}"), (f"recalibrated on {half}", f"pred_{enc}_{half}")]:
            rows = list(csv.DictReader(open(f"{R}/{folder}/scores.csv")))
            good = [r for r in rows if f"/{other}/" in r["image"]]
            bad = [r for r in rows if "/defective/" in r["image"]]
            flag = lambda rs: sum(r["is_anomalous"] == "True" for r in rs)
            print(enc, other, name, f"good flagged {flag(good)}/{len(good)}", f"defective flagged {flag(bad)}/{len(bad)}")
PY
