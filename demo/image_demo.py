"""Run a detector on a picture and save the annotated result.

Example::

    python demo/image_demo.py demo/demo.jpg \
        configs/retinanet/retinanet_r50_fpn_1x_coco.py \
        --weights retinanet.pth --out-dir outputs --pred-score-thr 0.3
"""
import argparse
import os.path as osp
import sys

import cv2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Detect objects in an image and save the drawing')
    parser.add_argument('img', help='image file')
    parser.add_argument('config', help='model config file')
    parser.add_argument('--weights', help='checkpoint file (detkit or '
                        'mmdetection); random weights when omitted')
    parser.add_argument('--out-dir', default='outputs',
                        help='folder for the annotated picture')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='draw and print detections above this score')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from detkit.apis import inference_detector, init_detector
    from detkit.visualization import DetLocalVisualizer

    if not osp.isfile(args.img):
        sys.exit(f'image not found: {args.img}')
    model = init_detector(args.config, args.weights, device=args.device)
    result = inference_detector(model, args.img)

    image = cv2.imread(args.img, cv2.IMREAD_COLOR)
    if image is None:
        sys.exit(f'cannot decode image: {args.img}')
    visualizer = DetLocalVisualizer(name='image_demo')
    visualizer.dataset_meta = model.dataset_meta
    out_file = osp.join(args.out_dir, 'vis', osp.basename(args.img))
    visualizer.add_datasample(
        'image_demo',
        image[..., ::-1],
        data_sample=result,
        draw_gt=False,
        out_file=out_file,
        pred_score_thr=args.pred_score_thr)

    pred = result.pred_instances
    keep = pred.scores >= args.pred_score_thr
    classes = model.dataset_meta.get('classes', [])
    print(f'{int(keep.sum())} detections with score >= '
          f'{args.pred_score_thr}:')
    for box, score, label in zip(pred.bboxes[keep], pred.scores[keep],
                                 pred.labels[keep]):
        name = classes[label] if label < len(classes) else str(int(label))
        x1, y1, x2, y2 = (round(float(v), 1) for v in box)
        print(f'  {name:<12} {float(score):.3f}  [{x1}, {y1}, {x2}, {y2}]')
    print(f'annotated picture: {out_file}')
    return out_file


if __name__ == '__main__':
    main()
