"""The report page in a real browser: headless Chromium loads it from a
file:// URL with no console error and no network request, its sections are
in the DOM, its tables sort, and the screenshot is not blank.

Chromium is Debian's ``chromium`` package (tools/run_tests.sh installs it
where apt-get can); without it the test skips, except with ``CI=true``,
where it fails.
"""
import os

import cv2
import numpy as np
import pytest
from headless_chromium import find_chromium, load_page
from report_page import parse_page, write_hand_made
from toolbox_toys import run_tool

REPORT = run_tool('tools', 'analysis_tools', 'report.py')

# Click the AP header of the class table once (descending), then again.
SORT = ("(function () { var t = document.getElementById('class-table');"
        " var th = t.tHead.rows[0].cells[3], order = [];"
        " for (var i = 0; i < 2; i++) { th.click();"
        " order.push(Array.prototype.map.call(t.tBodies[0].rows,"
        " function (r) { return r.cells[0].textContent; }).join(',')); }"
        " return order; })()")


@pytest.fixture(scope='module')
def chromium():
    if find_chromium() is None:
        reason = ('headless Chromium is not installed: tools/run_tests.sh '
                  'installs it (apt-get install -y chromium) where it can')
        if os.environ.get('CI', '').lower() == 'true':
            pytest.fail(f'{reason}, and CI=true requires this test to run')
        pytest.skip(reason)


def test_the_harness_sees_errors_and_requests(chromium, tmp_path):
    # A page that does everything the report must not: the checks below
    # would catch it.
    bad = tmp_path / 'bad.html'
    bad.write_text('<html><body><img src="http://127.0.0.1:9/x.png">'
                   '<script>console.error("boom"); undefined_call();'
                   '</script></body></html>')
    seen = load_page(bad.as_uri(), timeout=30)
    assert any('boom' in str(e) for e in seen['console_errors'])
    assert any('undefined_call' in str(e) for e in seen['exceptions'])
    assert 'http://127.0.0.1:9/x.png' in seen['requests']


def test_report_in_headless_chromium(chromium, tmp_path):
    cfg_file, pkl = write_hand_made(tmp_path)
    out = tmp_path / 'report.html'
    REPORT['main']([cfg_file, pkl, '--out', str(out), '--topk', '2'])
    seen = load_page(out.as_uri(), expressions=[SORT])
    assert seen['console_errors'] == [] and seen['exceptions'] == []
    # The page itself, then only its own data: URIs.
    assert seen['requests'][0] == out.as_uri()
    assert all(u.startswith('data:') for u in seen['requests'][1:])
    page = parse_page(seen['dom'])
    assert page['sections'] == ['glance', 'metrics', 'classes', 'pr',
                                'confusion', 'errors', 'scores', 'gallery',
                                'training']
    assert len(page['figures']) == 4
    assert {'metrics-table', 'class-table', 'confusion',
            'error-table'} <= set(page['tables'])
    # B (AP 1) before A (AP 0.36) when sorted down, then the reverse.
    assert seen['values'][0] == ['B,A', 'A,B']

    png = tmp_path / 'report.png'
    png.write_bytes(seen['screenshot'])
    image = cv2.imdecode(np.frombuffer(seen['screenshot'], np.uint8),
                         cv2.IMREAD_COLOR)
    assert image.shape == (900, 1280, 3)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    # Not blank: a dark header band, text, and a good share of the pixels
    # away from the white background.
    assert gray.std() > 30
    assert (gray[:40] < 80).mean() > 0.9  # the header band
    assert (gray < 200).mean() > 0.1
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 200
