"""A TCP proxy a test can pause or cut, to put a network partition between a client and PostgreSQL.

``pause()`` stops forwarding but keeps every connection open: the client's kernel still gets its packets
acknowledged (by ours), so only an application-level deadline notices, the hardest partition to detect.
``cut()`` closes every connection and refuses new ones until ``resume()``.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._paused = False
        self._cut = False
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="tcpproxy", daemon=True)
        self._thread.start()

    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def pause(self) -> None:
        with self._lock:
            self._paused = True
        self._poke()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            for s in list(self._pairs):
                s.close()
            self._pairs.clear()
        self._poke()

    def resume(self) -> None:
        with self._lock:
            self._paused = self._cut = False
        self._poke()

    def close(self) -> None:
        self._stop = True
        self._poke()
        self._thread.join(5)
        self.listener.close()
        for s in list(self._pairs):
            s.close()

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop:
            sel = selectors.DefaultSelector()
            sel.register(self._wake_r, selectors.EVENT_READ)
            with self._lock:
                paused, pairs = self._paused, dict(self._pairs)
            sel.register(self.listener, selectors.EVENT_READ)
            if not paused:
                for s in pairs:
                    sel.register(s, selectors.EVENT_READ)
            for key, _ in sel.select(timeout=1.0):
                sock = key.fileobj
                if sock is self._wake_r:
                    self._wake_r.recv(4096)
                elif sock is self.listener:
                    self._accept()
                else:
                    assert isinstance(sock, socket.socket)
                    self._forward(sock, pairs.get(sock))
            sel.close()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        with self._lock:
            refuse = self._cut
        if refuse:
            client.close()
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._pairs[client] = server
            self._pairs[server] = client

    def _forward(self, src: socket.socket, dst: socket.socket | None) -> None:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if data and dst is not None:
            try:
                dst.sendall(data)
                return
            except OSError:
                pass
        with self._lock:
            for s in (src, dst):
                if s is not None:
                    self._pairs.pop(s, None)
                    s.close()


@contextmanager
def tcp_proxy(target: tuple[str, int]) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()
