//! The crate against the installed library and the real kernel.
use pagewise::{Backend, Checkpoint, FillPolicy, LazyClient, LossPolicy, PageRange, PageServer, Source, Tracker};
use std::sync::Arc;
use std::time::Duration;

extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
    fn munmap(addr: *mut u8, len: usize) -> i32;
    fn sysconf(name: i32) -> i64;
    fn getpid() -> i32;
}
const PROT_RW: i32 = 0x1 | 0x2;
const MAP_PRIVATE_ANON: i32 = 0x02 | 0x20;
const SC_PAGESIZE: i32 = 30;

fn page() -> usize {
    unsafe { sysconf(SC_PAGESIZE) as usize }
}

/// `pages` pages of private anonymous memory, unmapped on drop.
struct Mem {
    ptr: *mut u8,
    len: usize,
}
impl Mem {
    fn new(pages: usize) -> Mem {
        let len = pages * page();
        let ptr = unsafe { mmap(std::ptr::null_mut(), len, PROT_RW, MAP_PRIVATE_ANON, -1, 0) };
        assert!(!ptr.is_null() && ptr as isize != -1, "mmap failed");
        Mem { ptr, len }
    }
    fn bytes(&self) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}
impl Drop for Mem {
    fn drop(&mut self) {
        unsafe { munmap(self.ptr, self.len) };
    }
}

#[test]
fn version_matches_the_crate() {
    assert_eq!(pagewise::version(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn mprotect_backend_needs_the_interposers() {
    let (available, reason) = Backend::Mprotect.available().unwrap();
    assert!(!available);
    assert!(reason.contains("libpagewise-interpose"), "{}", reason);
    let err = Tracker::new(Backend::Mprotect).err().expect("created without interposers");
    assert!(err.is_not_supported(), "{}", err);
    assert!(Backend::Auto.available().is_err());
}

#[test]
fn tracker_reports_exactly_the_written_pages() {
    let mem = Mem::new(16);
    let t = Tracker::new(Backend::Auto).unwrap();
    assert_ne!(t.backend(), Backend::Mprotect);
    unsafe { t.track(mem.ptr, mem.len).unwrap() };
    let pg = page();
    mem.bytes()[2 * pg] = 1;
    mem.bytes()[9 * pg + 5] = 2;
    let base = mem.ptr as u64;
    let got = t.collect().unwrap();
    assert_eq!(
        got,
        vec![
            PageRange { start: base + 2 * pg as u64, end: base + 3 * pg as u64 },
            PageRange { start: base + 9 * pg as u64, end: base + 10 * pg as u64 },
        ]
    );
    assert!(t.collect().unwrap().is_empty());
    t.untrack(mem.ptr, mem.len).unwrap();
    let err = t.untrack(mem.ptr, mem.len).unwrap_err();
    assert_eq!(err.code, -2, "{}", err); // -ENOENT
}

#[test]
fn checkpoint_rewinds_in_place() {
    let mem = Mem::new(32);
    for (i, b) in mem.bytes().iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let before = mem.bytes().to_vec();
    let mut cp = unsafe { Checkpoint::new(mem.ptr, mem.len, Backend::Auto).unwrap() };
    for _ in 0..3 {
        let pg = page();
        mem.bytes()[5 * pg..7 * pg].fill(0xEE);
        let st = cp.rewind().unwrap();
        assert_eq!(st.pages_restored, 2);
        assert!(mem.bytes() == &before[..], "memory differs after rewind");
    }
}

#[test]
fn page_server_fills_a_lazy_client() {
    let pages = 64;
    let pg = page();
    let data: Arc<[u8]> = (0..pages * pg).map(|i| (i * 7 % 256) as u8).collect::<Vec<u8>>().into();
    let source = Source::bytes(data.clone()).unwrap();
    assert_eq!(source.size(), (pages * pg) as u64);
    let sock = format!("/tmp/pagewise-pkg-rust-{}.sock", unsafe { getpid() });
    let mut server = PageServer::start(&sock, &source, FillPolicy::default()).unwrap();
    let guest = Mem::new(pages);
    {
        let mut client = unsafe {
            LazyClient::connect(&sock, guest.ptr, guest.len, 0, LossPolicy::Sigbus, Some(Duration::from_secs(10)))
                .unwrap()
        };
        assert!(client.ready());
        client.status().unwrap();
        assert!(guest.bytes() == &data[..], "served memory differs from the source");
        client.populate().unwrap();
        assert_eq!(client.poisoned_pages(), 0);
    }
    server.wait_clients_done(1, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(server.refused(), 0);
    server.stop();
    assert!(!std::path::Path::new(&sock).exists());
}

#[test]
fn errors_say_what_failed() {
    let err = Source::image("/nonexistent/pagewise.pwimg").err().expect("opened a missing image");
    assert_eq!(err.code, -2);
    assert!(err.message.contains("/nonexistent/pagewise.pwimg"), "{}", err.message);
    let err = unsafe {
        LazyClient::connect("/nonexistent/pagewise.sock", std::ptr::null_mut(), 0, 0, LossPolicy::Sigbus, None)
    }
    .err()
    .expect("connected to nothing");
    assert!(err.code < 0, "{}", err);
}
