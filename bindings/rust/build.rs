//! Finds libpagewise with the `pkg-config` program (no crate): the link
//! search path and library, and an rpath to it when it is not in a system
//! directory, so that tests and programs run without LD_LIBRARY_PATH.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_LIBDIR");
    let pkg_config = std::env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let out = Command::new(&pkg_config)
        .args(["--libs", "pagewise"])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {} (install pkg-config)", pkg_config, e));
    if !out.status.success() {
        panic!(
            "{} --libs pagewise failed: {}\ninstall pagewise (make install PREFIX=...) and set \
             PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig",
            pkg_config,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let flags = String::from_utf8(out.stdout).expect("pkg-config printed non-UTF-8");
    // Re-run when the .pc file changes (a reinstall elsewhere).
    if let Ok(dir) = Command::new(&pkg_config).args(["--variable=pcfiledir", "pagewise"]).output() {
        let dir = String::from_utf8_lossy(&dir.stdout).trim().to_string();
        if !dir.is_empty() {
            println!("cargo:rerun-if-changed={}/pagewise.pc", dir);
        }
    }
    for flag in flags.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={}", dir);
            if !matches!(dir, "/usr/lib" | "/lib" | "/usr/lib/x86_64-linux-gnu" | "/usr/lib64") {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir);
            }
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={}", lib);
        }
    }
}
