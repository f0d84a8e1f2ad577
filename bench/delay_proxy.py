#!/usr/bin/env python3
"""bench/delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS MBIT

A wide-area link in user space, on 127.0.0.1: every connection to LISTEN_PORT is
forwarded to TARGET_PORT, each direction delayed by DELAY_MS (so the round trip
is twice that) and paced at MBIT megabits per second. Each direction holds at
most twice its bandwidth-delay product in flight (a link with a bounded queue):
a sender that outruns the link waits, as it would on a real one. Runs until
killed; prints "listening" once it accepts connections.
"""
import collections
import socket
import sys
import threading
import time

CHUNK = 256 * 1024   # bytes read at once
PACE = 64 * 1024     # bytes sent at once (smaller: smoother pacing)


class Direction:
    """One direction of one connection: a reader queues, a writer delivers late."""

    def __init__(self, src, dst, delay, rate):
        self.src, self.dst, self.delay, self.rate = src, dst, delay, rate
        self.queue = collections.deque()
        self.held = 0
        self.limit = max(int(2 * rate * delay), 4 * CHUNK)
        self.cv = threading.Condition()

    def read(self):
        try:
            while True:
                data = self.src.recv(CHUNK)
                with self.cv:
                    while data and self.held >= self.limit:
                        self.cv.wait()
                    self.queue.append((time.monotonic() + self.delay, data))
                    self.held += len(data)
                    self.cv.notify_all()
                if not data:
                    return
        except OSError:
            with self.cv:
                self.queue.append((time.monotonic(), None))
                self.cv.notify_all()

    def write(self):
        free = time.monotonic()   # when the link may send again
        try:
            while True:
                with self.cv:
                    while not self.queue:
                        self.cv.wait()
                    due, data = self.queue.popleft()
                    if data:
                        self.held -= len(data)
                    self.cv.notify_all()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if data is None:
                    raise OSError("reader failed")
                if not data:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                for at in range(0, len(data), PACE):
                    piece = data[at:at + PACE]
                    now = time.monotonic()
                    if free > now:
                        time.sleep(free - now)
                    free = max(free, now) + len(piece) / self.rate
                    self.dst.sendall(piece)
        except OSError:
            for s in (self.src, self.dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def serve(client, target, delay, rate):
    try:
        upstream = socket.create_connection(("127.0.0.1", target))
    except OSError:
        client.close()
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threads = []
    for d in (Direction(client, upstream, delay, rate), Direction(upstream, client, delay, rate)):
        threads += [threading.Thread(target=d.read, daemon=True),
                    threading.Thread(target=d.write, daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    upstream.close()


def main():
    listen, target, delay_ms, mbit = (int(a) for a in sys.argv[1:5])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen))
    server.listen(64)
    print("listening", flush=True)
    while True:
        client, _ = server.accept()
        threading.Thread(target=serve, args=(client, target, delay_ms / 1000, mbit * 125000),
                         daemon=True).start()


if __name__ == "__main__":
    main()
