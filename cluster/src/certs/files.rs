//! The files behind certificates: writing them without replacing what is
//! there unless asked, private keys readable by their owner only, and
//! reading PEM certificates and keys back with the path in every error.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::CertsError;

/// Unix mode of a private key: read and write for the owner only.
#[cfg(unix)]
const KEY_MODE: u32 = 0o600;
/// Unix mode of a certificate (before the umask): public.
#[cfg(unix)]
const CERT_MODE: u32 = 0o644;

/// One file to write.
pub(crate) struct Output {
    pub path: PathBuf,
    pub contents: String,
    /// A private key: mode 0600 on Unix.
    pub secret: bool,
}

/// The paths among `paths` that exist already (as anything, even a
/// dangling symbolic link).
pub(crate) fn existing<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Vec<PathBuf> {
    paths
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .map(Path::to_path_buf)
        .collect()
}

/// Creates `dir` if needed and writes every output into it. A file that
/// exists is replaced only with `force`; without it, finding one is an
/// error (the caller checks all of them first, so that is a race).
pub(crate) fn write_all(dir: &Path, outputs: &[Output], force: bool) -> Result<(), CertsError> {
    fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        action: "creating directory",
        path: dir.to_path_buf(),
        source,
    })?;
    for output in outputs {
        write_new(output, force).map_err(|source| CertsError::Io {
            action: "writing",
            path: output.path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Writes a file that does not exist yet, with its mode set at creation
/// (so a key is never readable by others, not even for a moment). With
/// `force`, whatever is at the path (a file or a link) is removed first.
fn write_new(output: &Output, force: bool) -> io::Result<()> {
    if force {
        match fs::remove_file(&output.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if output.secret { KEY_MODE } else { CERT_MODE });
    }
    let mut file = options.open(&output.path)?;
    file.write_all(output.contents.as_bytes())?;
    file.sync_all()
}

fn read(path: &Path) -> Result<Vec<u8>, CertsError> {
    fs::read(path).map_err(|source| CertsError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })
}

fn pem_problem(path: &Path, problem: String) -> CertsError {
    CertsError::Pem {
        path: path.to_path_buf(),
        problem,
    }
}

/// Every certificate in a PEM file, in order; at least one.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| pem_problem(path, format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_problem(
            path,
            "no certificate (-----BEGIN CERTIFICATE-----) in the file".to_owned(),
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => pem_problem(
            path,
            "no private key (-----BEGIN PRIVATE KEY-----, or EC / RSA) in the file".to_owned(),
        ),
        e => pem_problem(path, format!("malformed PEM: {e}")),
    })
}
