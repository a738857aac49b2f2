"""Run a detector on a video and write the annotated video (OpenCV).

    python demo/video_demo.py traffic.mp4 \
        configs/retinanet/retinanet_r50_fpn_1x_coco.py \
        --weights retinanet.pth --out traffic_det.mp4 --frame-stride 5

Every ``--frame-stride``-th frame (the first included) is detected, drawn
and written; the output plays at ``fps / stride`` so it lasts as long as the
input. ``.mp4`` is written with the ``mp4v`` codec, ``.avi`` with ``MJPG``.
"""
import argparse
import math
import os
import os.path as osp
import sys

import cv2

from detkit.apis.det_inferencer import score_thr_arg

FOURCC = {'.mp4': 'mp4v', '.avi': 'MJPG', '.mkv': 'mp4v', '.mov': 'mp4v'}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Detect objects in a video and write it annotated')
    parser.add_argument('video', help='input video file')
    parser.add_argument('config', help='model config file (or config name)')
    parser.add_argument('--weights', help='checkpoint file; random weights '
                        'when omitted')
    parser.add_argument('--out', required=True,
                        help='output video (.mp4, .avi, .mkv or .mov)')
    parser.add_argument('--frame-stride', type=int, default=1,
                        help='detect and write every N-th frame')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument('--pred-score-thr', type=score_thr_arg, default=0.3,
                        help='draw detections scoring at least this (0 to 1)')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='frames per forward pass')
    return parser.parse_args(argv)


def read_frames(capture, stride):
    """Yield ``(index, BGR frame)`` for every ``stride``-th frame."""
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        if index % stride == 0:
            yield index, frame
        index += 1


def main(argv=None):
    """Returns one dict per written frame: ``frame`` (its index in the
    input) and the inferencer's prediction dict."""
    args = parse_args(argv)
    if args.frame_stride < 1:
        sys.exit(f'--frame-stride must be >= 1, got {args.frame_stride}')
    ext = osp.splitext(args.out)[1].lower()
    if ext not in FOURCC:
        sys.exit(f'--out {args.out}: use one of {", ".join(FOURCC)}')
    capture = cv2.VideoCapture(args.video)
    if not capture.isOpened():
        sys.exit(f'cannot open the video {args.video}')
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))

    from mmengine.utils import ProgressBar

    from detkit.apis.det_inferencer import build_for_cli
    inferencer = build_for_cli('video_demo.py', args.config, args.weights,
                               device=args.device, show_progress=False)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*FOURCC[ext]),
                             fps / args.frame_stride, size)
    if not writer.isOpened():
        sys.exit(f'OpenCV cannot write {args.out} with codec {FOURCC[ext]}')
    bar = ProgressBar(math.ceil(total / args.frame_stride),
                      file=sys.stderr) if total > 0 else None
    results = []

    def flush(batch):
        out = inferencer([frame for _, frame in batch],
                         batch_size=args.batch_size,
                         pred_score_thr=args.pred_score_thr, return_vis=True)
        for (index, _), pred, drawn in zip(batch, out['predictions'],
                                           out['visualization']):
            writer.write(drawn[..., ::-1].copy())
            results.append(dict(frame=index, **pred))
            if bar is not None:
                bar.update()

    batch = []
    try:
        for index, frame in read_frames(capture, args.frame_stride):
            batch.append((index, frame))
            if len(batch) == args.batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        capture.release()
        writer.release()
    if bar is not None:
        sys.stderr.write('\n')
    print(f'wrote {len(results)} of {total} frames (frame stride '
          f'{args.frame_stride}) at {fps / args.frame_stride:.2f} fps to '
          f'{args.out}')
    return results


if __name__ == '__main__':
    main()
