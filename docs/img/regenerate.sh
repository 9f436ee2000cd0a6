#!/usr/bin/env bash
# Regenerates the diagrams embedded in docs/render.md (deterministic: same specs -> same bytes).
# Usage: bash docs/img/regenerate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCHC="${PYTHON:-.venv/bin/python} -m archdsl"
OUT=docs/img
$ARCHC render specs/lenet.arch:lenet -o $OUT/lenet.svg --rankdir LR
$ARCHC render specs/resnet.arch:resnet50 -o $OUT/resnet50_depth1.svg --depth 1
$ARCHC render specs/resnet.arch:resnet50 -o $OUT/resnet50_depth2.svg --depth 2
$ARCHC render specs/resnet.arch:resnet50 -o $OUT/resnet50_full.svg
$ARCHC render specs/resnet.arch:resnet50 -o $OUT/resnet50.html --depth 2
$ARCHC render examples/inception_block.arch -o $OUT/inception_block.svg
$ARCHC render examples/dense_block.arch -o $OUT/dense_block.svg --set layers=3
$ARCHC render examples/repvgg_block.arch -o $OUT/repvgg_train.svg
$ARCHC render examples/repvgg_block.arch -o $OUT/repvgg_deploy.svg --deploy
$ARCHC render examples/replknet_stage.arch -o $OUT/replknet_stage.svg
$ARCHC render examples/replknet_stage.arch -o $OUT/replknet_stage_deploy.svg --deploy
$ARCHC render specs/vit.arch:vit_tiny_patch16_224 -o $OUT/vit_tiny_depth1.svg --depth 1
$ARCHC render specs/vit.arch:vit_tiny_patch16_224 -o $OUT/vit_tiny_depth2.svg --depth 2
$ARCHC render specs/vit.arch:vit_tiny_patch16_224 -o $OUT/vit_tiny_depth3.svg --depth 3
for f in svg png; do
    $ARCHC render examples/fastvit_repmixer.arch -o $OUT/fastvit_repmixer_train.$f
    $ARCHC render examples/fastvit_repmixer.arch -o $OUT/fastvit_repmixer_deploy.$f --deploy
done
$ARCHC render examples/swin_stage.arch --allow-outside -o $OUT/swin_stage.svg --depth 3
# the paper style (docs/render.md#paper-figures)
$ARCHC render specs/resnet.arch:resnet50 -o $OUT/paper_resnet50.svg --style paper
$ARCHC render specs/resnet.arch:resnet50 -o $OUT/paper_resnet50_detail.svg --style paper --detail layer2.0
$ARCHC render specs/inception.arch:inception_v3 -o $OUT/paper_inception_v3.svg --style paper
$ARCHC render specs/replknet.arch:replknet_31b -o $OUT/paper_replknet_31b.svg --style paper
$ARCHC render specs/swin.arch:swin_t -o $OUT/paper_swin_t.svg --style paper
$ARCHC render specs/vit.arch:vit_base_patch16_224 -o $OUT/paper_vit_b.svg --style paper
$ARCHC render examples/unet.arch -o $OUT/paper_unet.svg --style paper
