"""pagewise from Python: ctypes bindings to the C API (pagewise/pagewise.h).

No third-party packages. The library is found, in order, at $PAGEWISE_LIBRARY
(a path to libpagewise.so.0), in the libdir `pkg-config --variable=libdir
pagewise` names, or by the dynamic loader's own search (libpagewise.so.0).

    import pagewise
    t = pagewise.Tracker()
    t.track(address, length)       # e.g. an mmap.mmap's address
    ...                            # the program writes
    for start, end in t.collect(): ...

Every failing call raises pagewise.Error with .code (the C API's negative
errno) and the library's message. Objects free their C handle on close() or
when collected; they are also context managers.

Thread safety: as the C API's (a Tracker's calls serialise; other objects are
for one thread at a time).
"""
import ctypes
import os
import subprocess

__all__ = ["Error", "version", "backend_available", "Tracker", "Checkpoint", "Source",
           "PageServer", "LazyClient", "BACKENDS", "NO_TIMEOUT"]

NO_TIMEOUT = -1
BACKENDS = {"auto": 0, "uffd-wp-async": 1, "uffd-wp": 2, "mprotect": 3, "soft-dirty": 4}
_LOSS = {"sigbus": 0, "abort": 1}


def _load():
    candidates = []
    if os.environ.get("PAGEWISE_LIBRARY"):
        candidates.append(os.environ["PAGEWISE_LIBRARY"])
    try:
        libdir = subprocess.run(["pkg-config", "--variable=libdir", "pagewise"],
                                capture_output=True, text=True, check=True).stdout.strip()
        if libdir:
            candidates.append(os.path.join(libdir, "libpagewise.so.0"))
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates.append("libpagewise.so.0")
    errors = []
    for c in candidates:
        try:
            return ctypes.CDLL(c)
        except OSError as e:
            errors.append(f"{c}: {e}")
    raise ImportError("libpagewise not found (set PAGEWISE_LIBRARY or PKG_CONFIG_PATH): " +
                      "; ".join(errors))


_lib = _load()
c_int, c_size, c_u64, c_i64, c_u32, c_void_p, c_char_p = (
    ctypes.c_int, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_int64, ctypes.c_uint32,
    ctypes.c_void_p, ctypes.c_char_p)


class _Region(ctypes.Structure):
    _fields_ = [("address", c_u64), ("length", c_u64), ("offset", c_u64), ("page_size", c_u32),
                ("prot", c_u32), ("kind", c_int), ("name", c_char_p)]


class _Range(ctypes.Structure):
    _fields_ = [("start", c_u64), ("end", c_u64)]


class _RewindStats(ctypes.Structure):
    _fields_ = [("pages_restored", c_u64), ("pages_copied", c_u64), ("pages_zeroed", c_u64),
                ("duration_ns", c_i64)]


class _FillPolicy(ctypes.Structure):
    _fields_ = [("fault_window_pages", c_u32), ("background_batch_pages", c_u32),
                ("no_background_fill", c_int), ("no_zeropage", c_int)]


class _GuestRegion(ctypes.Structure):
    _fields_ = [("address", c_u64), ("size", c_u64), ("offset", c_u64), ("page_size", c_u64)]


_LOST_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_char_p)


class _ClientOptions(ctypes.Structure):
    _fields_ = [("on_loss", c_int), ("wait_ready_ns", c_i64), ("on_server_lost", _LOST_FN),
                ("ctx", c_void_p)]


def _proto(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


P = ctypes.POINTER
_version = _proto("pagewise_version", c_char_p)
_errmsg = _proto("pagewise_errmsg", c_char_p)
_backend_available = _proto("pagewise_backend_available", c_int, c_int, P(c_char_p))
_region_of = _proto("pagewise_region_of", c_int, c_void_p, c_size, P(_Region))
_tracker_create = _proto("pagewise_tracker_create", c_int, c_int, P(c_void_p))
_tracker_destroy = _proto("pagewise_tracker_destroy", None, c_void_p)
_tracker_backend = _proto("pagewise_tracker_backend", c_int, c_void_p)
_tracker_track = _proto("pagewise_tracker_track", c_int, c_void_p, c_void_p, c_size)
_tracker_untrack = _proto("pagewise_tracker_untrack", c_int, c_void_p, c_void_p, c_size)
_tracker_collect = _proto("pagewise_tracker_collect", c_int, c_void_p, P(P(_Range)), P(c_size))
_cp_create = _proto("pagewise_checkpoint_create", c_int, P(_Region), c_size, c_int, P(c_void_p))
_cp_destroy = _proto("pagewise_checkpoint_destroy", None, c_void_p)
_cp_rewind = _proto("pagewise_checkpoint_rewind", c_int, c_void_p, P(_RewindStats))
_cp_update = _proto("pagewise_checkpoint_update", c_i64, c_void_p)
_src_image = _proto("pagewise_source_open_image", c_int, c_char_p, P(c_void_p))
_src_file = _proto("pagewise_source_open_file", c_int, c_char_p, P(c_void_p))
_src_memory = _proto("pagewise_source_from_memory", c_int, c_void_p, c_u64, P(c_void_p))
_src_size = _proto("pagewise_source_size", c_u64, c_void_p)
_src_release = _proto("pagewise_source_release", None, c_void_p)
_srv_start = _proto("pagewise_page_server_start", c_int, c_char_p, c_void_p, P(_FillPolicy),
                    P(c_void_p))
_srv_wait = _proto("pagewise_page_server_wait", c_int, c_void_p, c_size, c_i64)
_srv_refused = _proto("pagewise_page_server_refused", c_u64, c_void_p)
_srv_stop = _proto("pagewise_page_server_stop", None, c_void_p)
_srv_destroy = _proto("pagewise_page_server_destroy", None, c_void_p)
_cl_connect = _proto("pagewise_lazy_client_connect", c_int, c_char_p, P(_GuestRegion), c_size,
                     P(_ClientOptions), P(c_void_p))
_cl_status = _proto("pagewise_lazy_client_status", c_int, c_void_p)
_cl_ready = _proto("pagewise_lazy_client_ready", c_int, c_void_p)
_cl_populate = _proto("pagewise_lazy_client_populate", c_int, c_void_p)
_cl_wait_lost = _proto("pagewise_lazy_client_wait_server_lost", c_int, c_void_p, c_i64)
_cl_poisoned = _proto("pagewise_lazy_client_poisoned_pages", c_u64, c_void_p)
_cl_destroy = _proto("pagewise_lazy_client_destroy", None, c_void_p)


class Error(Exception):
    """A failed pagewise call: .code is the negative errno, str() the message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code

    @property
    def not_supported(self):
        return self.code == -95  # -EOPNOTSUPP


def _check(rc):
    if rc < 0:
        raise Error(rc, (_errmsg() or b"").decode(errors="replace"))
    return rc


def _nanos(seconds):
    return NO_TIMEOUT if seconds is None else int(seconds * 1e9)


def version():
    return _version().decode()


def backend_available(name):
    """(available, reason) for a backend name other than "auto"."""
    reason = c_char_p()
    rc = _check(_backend_available(BACKENDS[name], ctypes.byref(reason)))
    return rc == 1, (reason.value or b"").decode()


class _Handle:
    _destroy = None

    def __init__(self):
        self._h = c_void_p()

    def close(self):
        if self._h:
            type(self)._destroy(self._h)
            self._h = c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Tracker(_Handle):
    """Which pages were written since I last asked."""
    _destroy = staticmethod(_tracker_destroy)

    def __init__(self, backend="auto"):
        super().__init__()
        _check(_tracker_create(BACKENDS[backend], ctypes.byref(self._h)))

    @property
    def backend(self):
        b = _tracker_backend(self._h)
        return next(k for k, v in BACKENDS.items() if v == b)

    def track(self, address, length):
        _check(_tracker_track(self._h, address, length))

    def untrack(self, address, length):
        _check(_tracker_untrack(self._h, address, length))

    def collect(self):
        """[(start, end), ...] written since the last collect, sorted, coalesced."""
        ranges, count = P(_Range)(), c_size()
        _check(_tracker_collect(self._h, ctypes.byref(ranges), ctypes.byref(count)))
        return [(ranges[i].start, ranges[i].end) for i in range(count.value)]


class Checkpoint(_Handle):
    """A saved copy of memory that rewind() puts back in place."""
    _destroy = staticmethod(_cp_destroy)

    def __init__(self, address, length, backend="auto"):
        super().__init__()
        region = _Region()
        _check(_region_of(address, length, ctypes.byref(region)))
        _check(_cp_create(ctypes.byref(region), 1, BACKENDS[backend], ctypes.byref(self._h)))

    def rewind(self):
        """Puts back the pages written since; returns a dict of what it did."""
        st = _RewindStats()
        _check(_cp_rewind(self._h, ctypes.byref(st)))
        return {"pages_restored": st.pages_restored, "pages_copied": st.pages_copied,
                "pages_zeroed": st.pages_zeroed, "duration_ns": st.duration_ns}

    def update(self):
        return _check(_cp_update(self._h))


class Source(_Handle):
    """Pages for a server or restore: Source.image(path), .file(path), .memory(buffer)."""
    _destroy = staticmethod(_src_release)

    def __init__(self):
        super().__init__()
        self._keep = None

    @classmethod
    def image(cls, path):
        s = cls()
        _check(_src_image(os.fsencode(path), ctypes.byref(s._h)))
        return s

    @classmethod
    def file(cls, path):
        s = cls()
        _check(_src_file(os.fsencode(path), ctypes.byref(s._h)))
        return s

    @classmethod
    def memory(cls, data):
        """Serves a copy of the bytes `data`, kept alive with the source."""
        s = cls()
        s._keep = ctypes.create_string_buffer(bytes(data), len(data))
        _check(_src_memory(ctypes.addressof(s._keep), len(data), ctypes.byref(s._h)))
        return s

    @property
    def size(self):
        return _src_size(self._h)


class PageServer(_Handle):
    """A lazy page server on a Unix socket, Firecracker's UFFD handshake."""
    _destroy = staticmethod(_srv_destroy)

    def __init__(self, socket_path, source, fault_window_pages=0, no_background_fill=False):
        super().__init__()
        self._source = source  # the server holds its own reference; keep ours for clarity
        policy = _FillPolicy(fault_window_pages, 0, int(no_background_fill), 0)
        _check(_srv_start(os.fsencode(socket_path), source._h, ctypes.byref(policy),
                          ctypes.byref(self._h)))

    def wait_clients_done(self, clients, timeout=None):
        _check(_srv_wait(self._h, clients, _nanos(timeout)))

    @property
    def refused(self):
        return _srv_refused(self._h)

    def stop(self):
        _srv_stop(self._h)


class LazyClient(_Handle):
    """Memory the caller mapped, filled from a page server as it is touched;
    server loss turns into SIGBUS ("sigbus") or an abort ("abort")."""
    _destroy = staticmethod(_cl_destroy)

    def __init__(self, socket_path, address, length, offset=0, on_loss="sigbus",
                 wait_ready=None):
        super().__init__()
        region = _GuestRegion(address, length, offset, 0)
        opts = _ClientOptions(_LOSS[on_loss], 0 if wait_ready is None else _nanos(wait_ready),
                              _LOST_FN(), None)
        _check(_cl_connect(os.fsencode(socket_path), ctypes.byref(region), 1, ctypes.byref(opts),
                           ctypes.byref(self._h)))

    @property
    def connected(self):
        return _cl_status(self._h) == 0

    @property
    def ready(self):
        return _cl_ready(self._h) == 1

    def populate(self):
        _check(_cl_populate(self._h))

    def wait_server_lost(self, timeout=None):
        _check(_cl_wait_lost(self._h, _nanos(timeout)))

    @property
    def poisoned_pages(self):
        return _cl_poisoned(self._h)
