"""Tests of the ctypes module against the installed library (unittest only).

Run: PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig python3 -m unittest -v test_pagewise
"""
import ctypes
import mmap
import os
import unittest

import pagewise

PAGE = mmap.PAGESIZE


def address_of(m):
    return ctypes.addressof(ctypes.c_char.from_buffer(m))


class ModuleTest(unittest.TestCase):
    def test_version(self):
        self.assertRegex(pagewise.version(), r"^\d+\.\d+\.\d+$")

    def test_mprotect_backend_needs_the_interposers(self):
        ok, reason = pagewise.backend_available("mprotect")
        self.assertFalse(ok)
        self.assertIn("libpagewise-interpose", reason)
        with self.assertRaises(pagewise.Error) as cm:
            pagewise.Tracker("mprotect")
        self.assertTrue(cm.exception.not_supported, str(cm.exception))

    def test_tracker_reports_exactly_the_written_pages(self):
        m = mmap.mmap(-1, 16 * PAGE, flags=mmap.MAP_PRIVATE)
        base = address_of(m)
        with pagewise.Tracker() as t:
            self.assertNotEqual(t.backend, "mprotect")
            t.track(base, 16 * PAGE)
            m[3 * PAGE] = 1
            m[4 * PAGE + 9] = 2
            m[12 * PAGE] = 3
            self.assertEqual(t.collect(), [(base + 3 * PAGE, base + 5 * PAGE),
                                           (base + 12 * PAGE, base + 13 * PAGE)])
            self.assertEqual(t.collect(), [])
            t.untrack(base, 16 * PAGE)
            with self.assertRaises(pagewise.Error) as cm:
                t.untrack(base, 16 * PAGE)
            self.assertEqual(cm.exception.code, -2)  # -ENOENT

    def test_checkpoint_rewinds_in_place(self):
        m = mmap.mmap(-1, 32 * PAGE, flags=mmap.MAP_PRIVATE)
        m[:] = bytes(i % 251 for i in range(32 * PAGE))
        before = bytes(m)
        with pagewise.Checkpoint(address_of(m), 32 * PAGE) as cp:
            for _ in range(3):
                m[7 * PAGE:9 * PAGE] = b"\xee" * (2 * PAGE)
                self.assertEqual(cp.rewind()["pages_restored"], 2)
                self.assertEqual(bytes(m), before)

    def test_page_server_fills_a_lazy_client(self):
        data = bytes((i * 13) % 256 for i in range(64 * PAGE))
        sock = f"/tmp/pagewise-pkg-python-{os.getpid()}.sock"
        with pagewise.Source.memory(data) as src:
            self.assertEqual(src.size, len(data))
            with pagewise.PageServer(sock, src) as server:
                guest = mmap.mmap(-1, len(data), flags=mmap.MAP_PRIVATE)
                with pagewise.LazyClient(sock, address_of(guest), len(data),
                                         wait_ready=10) as client:
                    self.assertTrue(client.ready)
                    self.assertTrue(client.connected)
                    self.assertEqual(bytes(guest), data)
                    client.populate()
                    self.assertEqual(client.poisoned_pages, 0)
                server.wait_clients_done(1, timeout=30)
                self.assertEqual(server.refused, 0)
                server.stop()
                self.assertFalse(os.path.exists(sock))

    def test_errors_say_what_failed(self):
        with self.assertRaises(pagewise.Error) as cm:
            pagewise.Source.image("/nonexistent/pagewise.pwimg")
        self.assertEqual(cm.exception.code, -2)
        self.assertIn("/nonexistent/pagewise.pwimg", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
