"""Load a page in headless Chromium and report what happened: console
errors, uncaught exceptions, every network request, the DOM and a PNG
screenshot.

It speaks the DevTools protocol over ``--remote-debugging-pipe`` (JSON
messages separated by NUL bytes on file descriptors 3 and 4 of the
browser), so it needs nothing beyond the standard library: no websocket
client, no driver package.
"""
import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
         '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync',
         '--disable-default-apps', '--mute-audio', '--hide-scrollbars']


def find_chromium():
    """Path of a Chromium / Chrome binary, or None."""
    for name in ('chromium', 'chromium-browser', 'google-chrome',
                 'google-chrome-stable'):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Pipe:
    """Requests and events of one browser over its debugging pipe."""

    def __init__(self, to_browser, from_browser, timeout):
        self.out, self.inp = to_browser, from_browser
        self.timeout = timeout
        self.buffer = b''
        self.next_id = 0
        self.events = []

    def _read_message(self, deadline):
        while b'\0' not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('Chromium did not answer in time')
            ready, _, _ = select.select([self.inp], [], [], left)
            if ready:
                chunk = os.read(self.inp, 1 << 20)
                if not chunk:
                    raise RuntimeError('Chromium closed its debugging pipe')
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b'\0', 1)
        return json.loads(message)

    def call(self, method, session=None, **params):
        self.next_id += 1
        message = dict(id=self.next_id, method=method, params=params)
        if session:
            message['sessionId'] = session
        os.write(self.out, json.dumps(message).encode() + b'\0')
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get('id') == self.next_id:
                if 'error' in reply:
                    raise RuntimeError(f'{method}: {reply["error"]}')
                return reply.get('result', {})
            self.events.append(reply)

    def wait_for(self, method, seconds):
        deadline = time.monotonic() + seconds
        while not any(e.get('method') == method for e in self.events):
            self.events.append(self._read_message(deadline))

    def drain(self, seconds):
        """Collect events for ``seconds`` more (late console messages)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except TimeoutError:
            pass


def load_page(url, width=1280, height=900, timeout=60, full_page=False,
              expressions=()):
    """Open ``url`` and return ``dict(console_errors, exceptions, requests,
    dom, screenshot (PNG bytes), page_height, values)``; ``values`` are the
    results of the JavaScript ``expressions`` evaluated in the page after it
    loaded (before the DOM and the screenshot are taken)."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError('no chromium binary on PATH')
    cmd_r, cmd_w = os.pipe()
    res_r, res_w = os.pipe()
    profile = tempfile.mkdtemp(prefix='detkit_chromium_')

    def wire_fds():  # the browser reads fd 3 and writes fd 4
        high_r, high_w = os.dup(cmd_r), os.dup(res_w)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    proc = subprocess.Popen(
        [chromium, *FLAGS, '--remote-debugging-pipe',
         f'--user-data-dir={profile}', f'--window-size={width},{height}',
         'about:blank'], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, pass_fds=(3, 4),
        preexec_fn=wire_fds)
    os.close(cmd_r)
    os.close(res_w)
    pipe = _Pipe(cmd_w, res_r, timeout)
    try:
        target = pipe.call('Target.createTarget', url='about:blank')
        session = pipe.call('Target.attachToTarget',
                            targetId=target['targetId'],
                            flatten=True)['sessionId']
        for domain in ('Runtime', 'Log', 'Network', 'Page'):
            pipe.call(f'{domain}.enable', session)
        pipe.call('Emulation.setDeviceMetricsOverride', session, width=width,
                  height=height, deviceScaleFactor=1, mobile=False)
        pipe.call('Page.navigate', session, url=url)
        pipe.wait_for('Page.loadEventFired', timeout)
        pipe.drain(1.0)
        values = [pipe.call('Runtime.evaluate', session, expression=e,
                            returnByValue=True)['result'].get('value')
                  for e in expressions]
        dom = pipe.call('Runtime.evaluate', session,
                        expression='document.documentElement.outerHTML',
                        returnByValue=True)['result']['value']
        page_height = pipe.call(
            'Runtime.evaluate', session,
            expression='document.documentElement.scrollHeight',
            returnByValue=True)['result']['value']
        if full_page:
            pipe.call('Emulation.setDeviceMetricsOverride', session,
                      width=width, height=min(int(page_height), 16000),
                      deviceScaleFactor=1, mobile=False)
        shot = pipe.call('Page.captureScreenshot', session, format='png')
        events = list(pipe.events)
        try:
            pipe.call('Browser.close')
        except (RuntimeError, TimeoutError):
            pass
    finally:
        os.close(cmd_w)
        os.close(res_r)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    console = [e['params'] for e in events
               if e.get('method') == 'Runtime.consoleAPICalled'
               and e['params'].get('type') in ('error', 'assert')]
    console += [e['params']['entry'] for e in events
                if e.get('method') == 'Log.entryAdded'
                and e['params']['entry'].get('level') == 'error']
    return dict(
        console_errors=console,
        exceptions=[e['params'] for e in events
                    if e.get('method') == 'Runtime.exceptionThrown'],
        requests=[e['params']['request']['url'] for e in events
                  if e.get('method') == 'Network.requestWillBeSent'],
        dom=dom, screenshot=base64.b64decode(shot['data']),
        page_height=page_height, values=values)
