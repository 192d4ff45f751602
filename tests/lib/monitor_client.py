"""QMP and HMP clients for the monitor integration tests (stdlib only).

Unlike mpqtest.Qmp these keep raw access: negotiation is explicit, errors
come back as values, events are collected, and a caller can send any bytes.
"""
import json
import socket
import time


def connect_unix(path, proc=None, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.settimeout(30.0)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("process exited before %s appeared" % path)
            if time.monotonic() > deadline:
                raise RuntimeError("no socket at %s" % path)
            time.sleep(0.05)


class QmpClient:
    def __init__(self, path, proc=None):
        self.sock = connect_unix(path, proc)
        self.buf = b""
        self.events = []
        self.greeting = self.read()

    def read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send_raw(self, data):
        self.sock.sendall(data)

    def response(self):
        """Next non-event message."""
        while True:
            r = self.read()
            if "event" in r:
                self.events.append(r)
                continue
            return r

    def cmd(self, name, args=None, id=None):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        if id is not None:
            msg["id"] = id
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        return self.response()

    def ret(self, name, **args):
        r = self.cmd(name, args if args else None)
        if "return" not in r:
            raise RuntimeError("QMP %s failed: %r" % (name, r))
        return r["return"]

    def negotiate(self):
        r = self.cmd("qmp_capabilities")
        if r != {"return": {}}:
            raise RuntimeError("negotiation failed: %r" % r)

    def wait_event(self, name, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e["event"] == name:
                    self.events.remove(e)
                    return e
            if time.monotonic() > deadline:
                raise AssertionError("no %s event" % name)
            self.events.append(self.read())

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class HmpClient:
    PROMPT = b"(qemu) "

    def __init__(self, path, proc=None):
        self.sock = connect_unix(path, proc)
        self.banner = self._until_prompt()

    def _until_prompt(self):
        buf = b""
        while not buf.endswith(self.PROMPT):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("HMP connection closed; got %r" % buf[-200:])
            buf += chunk
        return buf.decode(errors="replace")

    def cmd(self, line):
        """Output of one command line (echo stripped), '\\r\\n' line ends kept."""
        self.sock.sendall(line.encode() + b"\r\n")
        out = self._until_prompt()
        out = out[: -len(self.PROMPT)]
        echo = line + "\r\n"
        if out.startswith(echo):
            out = out[len(echo):]
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
