//! The C API's declarations (include/pagewise/pagewise.h), written by hand:
//! the crate needs no bindgen. Keep in step with the header; the C API is
//! versioned (symbol node PAGEWISE_0.1), so a mismatch fails at link time.
#![allow(non_camel_case_types, dead_code)]

use std::os::raw::{c_char, c_int, c_void};

pub const PAGEWISE_NO_TIMEOUT: i64 = -1;

pub type pagewise_backend = c_int;
pub const PAGEWISE_BACKEND_AUTO: pagewise_backend = 0;
pub const PAGEWISE_BACKEND_UFFD_WP_ASYNC: pagewise_backend = 1;
pub const PAGEWISE_BACKEND_UFFD_WP: pagewise_backend = 2;
pub const PAGEWISE_BACKEND_MPROTECT: pagewise_backend = 3;
pub const PAGEWISE_BACKEND_SOFT_DIRTY: pagewise_backend = 4;

pub type pagewise_loss_policy = c_int;
pub const PAGEWISE_LOSS_SIGBUS: pagewise_loss_policy = 0;
pub const PAGEWISE_LOSS_ABORT: pagewise_loss_policy = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pagewise_features {
    pub kernel_release: [c_char; 65],
    pub uffd_available: c_int,
    pub uffd_features: u64,
    pub uffd_ioctls: u64,
    pub pagemap_scan: c_int,
    pub soft_dirty: c_int,
    pub thp_size: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pagewise_region {
    pub address: u64,
    pub length: u64,
    pub offset: u64,
    pub page_size: u32,
    pub prot: u32,
    pub kind: c_int,
    pub name: *const c_char,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct pagewise_range {
    pub start: u64,
    pub end: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct pagewise_rewind_stats {
    pub pages_restored: u64,
    pub pages_copied: u64,
    pub pages_zeroed: u64,
    pub duration_ns: i64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct pagewise_fill_policy {
    pub fault_window_pages: u32,
    pub background_batch_pages: u32,
    pub no_background_fill: c_int,
    pub no_zeropage: c_int,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pagewise_guest_region {
    pub address: u64,
    pub size: u64,
    pub offset: u64,
    pub page_size: u64,
}

#[repr(C)]
pub struct pagewise_lazy_client_options {
    pub on_loss: pagewise_loss_policy,
    pub wait_ready_ns: i64,
    pub on_server_lost: Option<extern "C" fn(ctx: *mut c_void, error: c_int, message: *const c_char)>,
    pub ctx: *mut c_void,
}

#[repr(C)]
pub struct pagewise_tracker {
    _private: [u8; 0],
}
#[repr(C)]
pub struct pagewise_checkpoint {
    _private: [u8; 0],
}
#[repr(C)]
pub struct pagewise_source {
    _private: [u8; 0],
}
#[repr(C)]
pub struct pagewise_page_server {
    _private: [u8; 0],
}
#[repr(C)]
pub struct pagewise_lazy_client {
    _private: [u8; 0],
}

extern "C" {
    pub fn pagewise_version() -> *const c_char;
    pub fn pagewise_errmsg() -> *const c_char;
    pub fn pagewise_probe(out: *mut pagewise_features) -> c_int;
    pub fn pagewise_backend_available(backend: pagewise_backend, reason: *mut *const c_char)
        -> c_int;
    pub fn pagewise_backend_name(backend: pagewise_backend) -> *const c_char;
    pub fn pagewise_region_of(addr: *const c_void, len: usize, out: *mut pagewise_region) -> c_int;

    pub fn pagewise_tracker_create(backend: pagewise_backend, out: *mut *mut pagewise_tracker)
        -> c_int;
    pub fn pagewise_tracker_destroy(tracker: *mut pagewise_tracker);
    pub fn pagewise_tracker_backend(tracker: *const pagewise_tracker) -> pagewise_backend;
    pub fn pagewise_tracker_track(tracker: *mut pagewise_tracker, addr: *mut c_void, len: usize)
        -> c_int;
    pub fn pagewise_tracker_untrack(tracker: *mut pagewise_tracker, addr: *mut c_void, len: usize)
        -> c_int;
    pub fn pagewise_tracker_collect(
        tracker: *mut pagewise_tracker,
        ranges: *mut *const pagewise_range,
        count: *mut usize,
    ) -> c_int;

    pub fn pagewise_checkpoint_create(
        regions: *const pagewise_region,
        count: usize,
        backend: pagewise_backend,
        out: *mut *mut pagewise_checkpoint,
    ) -> c_int;
    pub fn pagewise_checkpoint_destroy(checkpoint: *mut pagewise_checkpoint);
    pub fn pagewise_checkpoint_rewind(
        checkpoint: *mut pagewise_checkpoint,
        stats: *mut pagewise_rewind_stats,
    ) -> c_int;
    pub fn pagewise_checkpoint_update(checkpoint: *mut pagewise_checkpoint) -> i64;

    pub fn pagewise_source_open_image(path: *const c_char, out: *mut *mut pagewise_source)
        -> c_int;
    pub fn pagewise_source_open_file(path: *const c_char, out: *mut *mut pagewise_source) -> c_int;
    pub fn pagewise_source_from_memory(
        data: *const c_void,
        size: u64,
        out: *mut *mut pagewise_source,
    ) -> c_int;
    pub fn pagewise_source_size(source: *const pagewise_source) -> u64;
    pub fn pagewise_source_release(source: *mut pagewise_source);

    pub fn pagewise_page_server_start(
        socket_path: *const c_char,
        source: *mut pagewise_source,
        policy: *const pagewise_fill_policy,
        out: *mut *mut pagewise_page_server,
    ) -> c_int;
    pub fn pagewise_page_server_wait(
        server: *mut pagewise_page_server,
        clients: usize,
        timeout_ns: i64,
    ) -> c_int;
    pub fn pagewise_page_server_refused(server: *const pagewise_page_server) -> u64;
    pub fn pagewise_page_server_stop(server: *mut pagewise_page_server);
    pub fn pagewise_page_server_destroy(server: *mut pagewise_page_server);

    pub fn pagewise_lazy_client_connect(
        socket_path: *const c_char,
        regions: *const pagewise_guest_region,
        count: usize,
        options: *const pagewise_lazy_client_options,
        out: *mut *mut pagewise_lazy_client,
    ) -> c_int;
    pub fn pagewise_lazy_client_status(client: *const pagewise_lazy_client) -> c_int;
    pub fn pagewise_lazy_client_ready(client: *const pagewise_lazy_client) -> c_int;
    pub fn pagewise_lazy_client_populate(client: *mut pagewise_lazy_client) -> c_int;
    pub fn pagewise_lazy_client_wait_server_lost(
        client: *mut pagewise_lazy_client,
        timeout_ns: i64,
    ) -> c_int;
    pub fn pagewise_lazy_client_poisoned_pages(client: *const pagewise_lazy_client) -> u64;
    pub fn pagewise_lazy_client_destroy(client: *mut pagewise_lazy_client);
}
