"""Run a detector on pictures and save them annotated.

IMG is an image file, a folder of images or a glob pattern (quote it so the
shell does not expand it)::

    python demo/image_demo.py demo/demo.jpg \
        configs/retinanet/retinanet_r50_fpn_1x_coco.py \
        --weights retinanet.pth --out-dir outputs --pred-score-thr 0.3
    python demo/image_demo.py 'data/bccd/images/*.jpg' bccd_config.py \
        --weights bccd.pth --batch-size 4 --classes WBC Platelets

Writes ``OUT_DIR/vis/<image>`` (annotated pictures) and
``OUT_DIR/preds/<image stem>.json`` (boxes, scores, labels, label names)
and prints the detections of every image.

``--check`` only checks the images (unreadable files, FIFOs, EXIF
rotations, tiny or odd images; see ``DetInferencer.check_inputs``) and
exits 1 if one cannot be read, without building the model. A checkpoint
holding fewer than half of the model's weights is refused unless
``--allow-partial-checkpoint``.
"""
import argparse
import os.path as osp
import sys

from detkit.apis.det_inferencer import score_thr_arg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Detect objects in images and save the drawings')
    parser.add_argument('img', help='image file, folder or glob pattern')
    parser.add_argument('config', help='model config file (or the name of '
                        'a config under configs/)')
    parser.add_argument('--weights', help='checkpoint file (detkit or '
                        'mmdetection); random weights when omitted')
    parser.add_argument('--out-dir', default='outputs',
                        help='folder for vis/ pictures and preds/ JSON')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument('--pred-score-thr', type=score_thr_arg, default=0.3,
                        help='draw, save and print detections scoring at '
                        'least this (0 to 1)')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='images per forward pass')
    parser.add_argument('--classes', nargs='+',
                        help='keep only these classes (names or indices)')
    parser.add_argument('--no-save-pred', action='store_true',
                        help='do not write the preds/ JSON files')
    parser.add_argument('--check', action='store_true',
                        help='only check the images (readable? odd?) and '
                        'exit, 1 if one cannot be read')
    parser.add_argument('--allow-partial-checkpoint', action='store_true',
                        help='use --weights even when they hold fewer than '
                        "half of the model's weights")
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the inferencer's output (``predictions`` as dicts)."""
    args = parse_args(argv)
    from detkit.apis import DetInferencer
    from detkit.apis.det_inferencer import build_for_cli, collect_inputs

    try:
        names = [name for name, _ in collect_inputs(args.img)]
    except FileNotFoundError as err:
        sys.exit(str(err))
    if args.check:
        report = DetInferencer.check_inputs(args.img)
        print(report)
        sys.exit(1 if report.errors else 0)
    inferencer = build_for_cli(
        'image_demo.py', args.config, args.weights, device=args.device,
        allow_partial=args.allow_partial_checkpoint)
    result = inferencer(
        args.img,
        batch_size=args.batch_size,
        pred_score_thr=args.pred_score_thr,
        classes=args.classes,
        out_dir=args.out_dir,
        no_save_pred=args.no_save_pred)

    for name, pred in zip(names, result['predictions']):
        print(f'{name}: {len(pred["scores"])} detections with score >= '
              f'{args.pred_score_thr}')
        for box, score, label in zip(pred['bboxes'], pred['scores'],
                                     pred['label_names']):
            x1, y1, x2, y2 = (round(v, 1) for v in box)
            print(f'  {label:<12} {score:.3f}  [{x1}, {y1}, {x2}, {y2}]')
    print(f'annotated pictures: {osp.join(args.out_dir, "vis")}')
    if not args.no_save_pred:
        print(f'predictions (JSON): {osp.join(args.out_dir, "preds")}')
    return result


if __name__ == '__main__':
    main()
