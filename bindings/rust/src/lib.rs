//! Safe Rust bindings to pagewise's C API (`pagewise/pagewise.h`): write
//! tracking ([`Tracker`]), in-place rewind ([`Checkpoint`]), the lazy page
//! server ([`PageServer`]) and its client ([`LazyClient`]), which turns the
//! server's loss into SIGBUS instead of zero pages.
//!
//! Every fallible call returns [`Result`]; an [`Error`] carries the C API's
//! negative errno (`code`) and pagewise's message (what failed, where, and
//! what to do). Handles free their C object on drop. The library is found at
//! build time with `pkg-config pagewise` (build.rs).
//!
//! Thread safety: handles are `Send` (they may move between threads); the C
//! API serialises a tracker's calls internally, so [`Tracker`] is also `Sync`.

mod ffi;

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::c_int;
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

/// A failed pagewise call: the negative errno the C API returned and the
/// library's message for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Negative errno, e.g. `-libc::EOPNOTSUPP` (95) for a missing feature.
    pub code: i32,
    pub message: String,
}

impl Error {
    fn last(code: c_int) -> Error {
        // SAFETY: pagewise_errmsg returns a valid NUL-terminated string of
        // this thread, never NULL.
        let message = unsafe { CStr::from_ptr(ffi::pagewise_errmsg()) }.to_string_lossy().into_owned();
        Error { code, message }
    }
    fn invalid(message: &str) -> Error {
        Error { code: -22, message: message.to_string() }
    }
    /// True if the kernel or the build lacks a feature (-EOPNOTSUPP).
    pub fn is_not_supported(&self) -> bool {
        self.code == -95
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", self.message, -self.code)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn check(rc: c_int) -> Result<()> {
    if rc < 0 {
        Err(Error::last(rc))
    } else {
        Ok(())
    }
}

fn c_path(path: &str) -> Result<CString> {
    CString::new(path).map_err(|_| Error::invalid("path contains a NUL byte"))
}

fn nanos(timeout: Option<Duration>) -> i64 {
    match timeout {
        None => ffi::PAGEWISE_NO_TIMEOUT,
        Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
    }
}

/// The library's version, e.g. "0.1.0".
pub fn version() -> String {
    // SAFETY: static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::pagewise_version()) }.to_string_lossy().into_owned()
}

/// A write-tracking backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Auto,
    UffdWpAsync,
    UffdWp,
    /// Needs libpagewise-interpose linked or preloaded.
    Mprotect,
    SoftDirty,
}

impl Backend {
    fn to_c(self) -> ffi::pagewise_backend {
        match self {
            Backend::Auto => ffi::PAGEWISE_BACKEND_AUTO,
            Backend::UffdWpAsync => ffi::PAGEWISE_BACKEND_UFFD_WP_ASYNC,
            Backend::UffdWp => ffi::PAGEWISE_BACKEND_UFFD_WP,
            Backend::Mprotect => ffi::PAGEWISE_BACKEND_MPROTECT,
            Backend::SoftDirty => ffi::PAGEWISE_BACKEND_SOFT_DIRTY,
        }
    }
    fn from_c(b: ffi::pagewise_backend) -> Backend {
        match b {
            ffi::PAGEWISE_BACKEND_UFFD_WP_ASYNC => Backend::UffdWpAsync,
            ffi::PAGEWISE_BACKEND_UFFD_WP => Backend::UffdWp,
            ffi::PAGEWISE_BACKEND_MPROTECT => Backend::Mprotect,
            ffi::PAGEWISE_BACKEND_SOFT_DIRTY => Backend::SoftDirty,
            _ => Backend::Auto,
        }
    }
    /// "uffd-wp-async", ...
    pub fn name(self) -> &'static str {
        // SAFETY: static NUL-terminated string.
        unsafe { CStr::from_ptr(ffi::pagewise_backend_name(self.to_c())) }.to_str().unwrap_or("unknown")
    }
    /// Whether this backend can be created in this process, with the reason
    /// why not (or what it cannot guarantee). Err for `Auto`.
    pub fn available(self) -> Result<(bool, String)> {
        let mut reason = ptr::null();
        // SAFETY: reason is a valid out-pointer; the string is static.
        let rc = unsafe { ffi::pagewise_backend_available(self.to_c(), &mut reason) };
        check(rc)?;
        let text = if reason.is_null() {
            String::new()
        } else {
            unsafe { CStr::from_ptr(reason) }.to_string_lossy().into_owned()
        };
        Ok((rc == 1, text))
    }
}

/// `[start, end)` in bytes, page aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    pub start: u64,
    pub end: u64,
}

/// Which pages were written since I last asked.
pub struct Tracker {
    raw: *mut ffi::pagewise_tracker,
}

// SAFETY: the C tracker may be used from any thread; its calls serialise.
unsafe impl Send for Tracker {}
unsafe impl Sync for Tracker {}

impl Tracker {
    pub fn new(backend: Backend) -> Result<Tracker> {
        let mut raw = ptr::null_mut();
        // SAFETY: raw is a valid out-pointer.
        check(unsafe { ffi::pagewise_tracker_create(backend.to_c(), &mut raw) })?;
        Ok(Tracker { raw })
    }
    pub fn backend(&self) -> Backend {
        Backend::from_c(unsafe { ffi::pagewise_tracker_backend(self.raw) })
    }
    /// Tracks `len` bytes at `addr` (page aligned, mapped in this process).
    ///
    /// # Safety
    /// `addr..addr+len` must stay mapped while tracked (untrack before
    /// unmapping); the tracker changes how writes to it fault.
    pub unsafe fn track(&self, addr: *mut u8, len: usize) -> Result<()> {
        check(ffi::pagewise_tracker_track(self.raw, addr.cast(), len))
    }
    /// Stops tracking a range given to `track`.
    pub fn untrack(&self, addr: *mut u8, len: usize) -> Result<()> {
        // SAFETY: untracking touches only the tracker's own state.
        check(unsafe { ffi::pagewise_tracker_untrack(self.raw, addr.cast(), len) })
    }
    /// The pages written since the previous collect (or track), sorted and
    /// coalesced; re-armed atomically per page.
    pub fn collect(&self) -> Result<Vec<PageRange>> {
        let mut ranges: *const ffi::pagewise_range = ptr::null();
        let mut count = 0usize;
        // SAFETY: out-pointers valid; the array is copied before the next call.
        let rc = unsafe { ffi::pagewise_tracker_collect(self.raw, &mut ranges, &mut count) };
        check(rc)?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let slice = unsafe { std::slice::from_raw_parts(ranges, count) };
        Ok(slice.iter().map(|r| PageRange { start: r.start, end: r.end }).collect())
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        unsafe { ffi::pagewise_tracker_destroy(self.raw) }
    }
}

/// What a rewind did.
#[derive(Debug, Clone, Copy, Default)]
pub struct RewindStats {
    pub pages_restored: u64,
    pub pages_copied: u64,
    pub pages_zeroed: u64,
    pub duration: Duration,
}

/// A saved copy of memory that [`Checkpoint::rewind`] puts back in place,
/// copying only the pages written since.
pub struct Checkpoint {
    raw: *mut ffi::pagewise_checkpoint,
}

unsafe impl Send for Checkpoint {}

impl Checkpoint {
    /// Checkpoints `len` bytes at `addr` of this process.
    ///
    /// # Safety
    /// The memory must stay mapped while the checkpoint exists; rewind
    /// overwrites it, so no Rust reference to it may be live across a rewind
    /// that would observe the change unsoundly.
    pub unsafe fn new(addr: *mut u8, len: usize, backend: Backend) -> Result<Checkpoint> {
        let mut region = std::mem::MaybeUninit::<ffi::pagewise_region>::zeroed();
        check(ffi::pagewise_region_of(addr as *const _, len, region.as_mut_ptr()))?;
        let region = region.assume_init();
        let mut raw = ptr::null_mut();
        check(ffi::pagewise_checkpoint_create(&region, 1, backend.to_c(), &mut raw))?;
        Ok(Checkpoint { raw })
    }
    /// Puts back every page written since the checkpoint (or the last rewind).
    pub fn rewind(&mut self) -> Result<RewindStats> {
        let mut st = ffi::pagewise_rewind_stats::default();
        check(unsafe { ffi::pagewise_checkpoint_rewind(self.raw, &mut st) })?;
        Ok(RewindStats {
            pages_restored: st.pages_restored,
            pages_copied: st.pages_copied,
            pages_zeroed: st.pages_zeroed,
            duration: Duration::from_nanos(st.duration_ns.max(0) as u64),
        })
    }
    /// Makes the current contents the checkpoint; returns the pages saved.
    pub fn update(&mut self) -> Result<u64> {
        let n = unsafe { ffi::pagewise_checkpoint_update(self.raw) };
        if n < 0 {
            return Err(Error::last(n as c_int));
        }
        Ok(n as u64)
    }
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        unsafe { ffi::pagewise_checkpoint_destroy(self.raw) }
    }
}

/// Where a page server or restore reads pages: an image chain, a flat memory
/// file, or bytes in memory. Cheap to clone (reference counted).
#[derive(Clone)]
pub struct Source {
    inner: Arc<SourceHandle>,
}

struct SourceHandle {
    raw: *mut ffi::pagewise_source,
    _keep: Option<Arc<[u8]>>, // bytes a memory source reads
}

unsafe impl Send for SourceHandle {}
unsafe impl Sync for SourceHandle {}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        unsafe { ffi::pagewise_source_release(self.raw) }
    }
}

impl Source {
    /// The flat view of the image chain whose top layer is `path`.
    pub fn image(path: &str) -> Result<Source> {
        let p = c_path(path)?;
        let mut raw = ptr::null_mut();
        check(unsafe { ffi::pagewise_source_open_image(p.as_ptr(), &mut raw) })?;
        Ok(Source { inner: Arc::new(SourceHandle { raw, _keep: None }) })
    }
    /// A flat memory file (Firecracker's snapshot memory file).
    pub fn file(path: &str) -> Result<Source> {
        let p = c_path(path)?;
        let mut raw = ptr::null_mut();
        check(unsafe { ffi::pagewise_source_open_file(p.as_ptr(), &mut raw) })?;
        Ok(Source { inner: Arc::new(SourceHandle { raw, _keep: None }) })
    }
    /// Bytes held in memory (kept alive as long as the source).
    pub fn bytes(data: Arc<[u8]>) -> Result<Source> {
        let mut raw = ptr::null_mut();
        check(unsafe {
            ffi::pagewise_source_from_memory(data.as_ptr().cast(), data.len() as u64, &mut raw)
        })?;
        Ok(Source { inner: Arc::new(SourceHandle { raw, _keep: Some(data) }) })
    }
    pub fn size(&self) -> u64 {
        unsafe { ffi::pagewise_source_size(self.inner.raw) }
    }
}

/// How pages are filled; `Default` gives the library's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct FillPolicy {
    /// Aligned window filled around a fault, 1..=512 (0: default 16).
    pub fault_window_pages: u32,
    /// Pages per background fill, 1..=4096 (0: default 64).
    pub background_batch_pages: u32,
    /// Only faults install pages.
    pub no_background_fill: bool,
}

impl FillPolicy {
    fn to_c(self) -> ffi::pagewise_fill_policy {
        ffi::pagewise_fill_policy {
            fault_window_pages: self.fault_window_pages,
            background_batch_pages: self.background_batch_pages,
            no_background_fill: self.no_background_fill as c_int,
            no_zeropage: 0,
        }
    }
}

/// A lazy page server on a Unix socket (what `pagewise serve` runs),
/// speaking Firecracker's userfaultfd handshake. Stops on drop.
pub struct PageServer {
    raw: *mut ffi::pagewise_page_server,
    _source: Source,
}

unsafe impl Send for PageServer {}

impl PageServer {
    pub fn start(socket_path: &str, source: &Source, policy: FillPolicy) -> Result<PageServer> {
        let p = c_path(socket_path)?;
        let pol = policy.to_c();
        let mut raw = ptr::null_mut();
        check(unsafe { ffi::pagewise_page_server_start(p.as_ptr(), source.inner.raw, &pol, &mut raw) })?;
        Ok(PageServer { raw, _source: source.clone() })
    }
    /// Waits until `clients` clients have been served and dropped.
    pub fn wait_clients_done(&mut self, clients: usize, timeout: Option<Duration>) -> Result<()> {
        check(unsafe { ffi::pagewise_page_server_wait(self.raw, clients, nanos(timeout)) })
    }
    /// Handshakes refused so far.
    pub fn refused(&self) -> u64 {
        unsafe { ffi::pagewise_page_server_refused(self.raw) }
    }
    /// Stops serving and removes the socket file; idempotent.
    pub fn stop(&mut self) {
        unsafe { ffi::pagewise_page_server_stop(self.raw) }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        unsafe { ffi::pagewise_page_server_destroy(self.raw) }
    }
}

/// What happens to pages touched after the server is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossPolicy {
    /// The access raises SIGBUS.
    Sigbus,
    /// The process aborts with a message.
    Abort,
}

/// The client side of a page server: memory the caller mapped, filled from
/// the server as it is touched. On drop, if the server is still there, every
/// page is made resident first, so that disconnecting never exposes zeros.
pub struct LazyClient {
    raw: *mut ffi::pagewise_lazy_client,
}

unsafe impl Send for LazyClient {}

impl LazyClient {
    /// Hands `len` bytes at `addr` (private anonymous, page aligned, served
    /// from offset `offset` of the server's flat view) to the server at
    /// `socket_path`; waits up to `wait_ready` for its ready byte.
    ///
    /// # Safety
    /// The memory must be a private anonymous mapping that stays mapped while
    /// the client exists, with no page already present that should be served.
    pub unsafe fn connect(
        socket_path: &str,
        addr: *mut u8,
        len: usize,
        offset: u64,
        on_loss: LossPolicy,
        wait_ready: Option<Duration>,
    ) -> Result<LazyClient> {
        let p = c_path(socket_path)?;
        let region = ffi::pagewise_guest_region { address: addr as u64, size: len as u64, offset, page_size: 0 };
        let opts = ffi::pagewise_lazy_client_options {
            on_loss: match on_loss {
                LossPolicy::Sigbus => ffi::PAGEWISE_LOSS_SIGBUS,
                LossPolicy::Abort => ffi::PAGEWISE_LOSS_ABORT,
            },
            wait_ready_ns: wait_ready.map(|d| nanos(Some(d))).unwrap_or(0),
            on_server_lost: None,
            ctx: ptr::null_mut(),
        };
        let mut raw = ptr::null_mut();
        check(ffi::pagewise_lazy_client_connect(p.as_ptr(), &region, 1, &opts, &mut raw))?;
        Ok(LazyClient { raw })
    }
    /// Ok while the server is connected; Err (-EPIPE) once it is gone.
    pub fn status(&self) -> Result<()> {
        check(unsafe { ffi::pagewise_lazy_client_status(self.raw) })
    }
    /// Whether connect saw the server's ready byte.
    pub fn ready(&self) -> bool {
        unsafe { ffi::pagewise_lazy_client_ready(self.raw) == 1 }
    }
    /// Makes every page resident.
    pub fn populate(&mut self) -> Result<()> {
        check(unsafe { ffi::pagewise_lazy_client_populate(self.raw) })
    }
    /// Waits until the server's loss was seen and the pages sealed.
    pub fn wait_server_lost(&mut self, timeout: Option<Duration>) -> Result<()> {
        check(unsafe { ffi::pagewise_lazy_client_wait_server_lost(self.raw, nanos(timeout)) })
    }
    /// Pages poisoned since the server was lost.
    pub fn poisoned_pages(&self) -> u64 {
        unsafe { ffi::pagewise_lazy_client_poisoned_pages(self.raw) }
    }
}

impl Drop for LazyClient {
    fn drop(&mut self) {
        unsafe { ffi::pagewise_lazy_client_destroy(self.raw) }
    }
}
