//! `vatio certs dev` as a library call: checks the names, plans the files,
//! refuses to replace existing ones unless forced, then issues a development
//! CA and one certificate per node and client (ECDSA P-256) and writes them.
//!
//! Everything is generated in memory before the first file is written, so a
//! refused name or an rcgen error leaves the directory as it was.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use chrono::{Datelike as _, NaiveDate, TimeDelta, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::files::{self, Output};
use super::names;
use super::{CertsError, TlsFiles};

/// Subject common name of the CA `vatio certs dev` creates.
pub const DEV_CA_NAME: &str = "vatio development CA — not for production";
pub(crate) const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
/// Days a development CA is valid from today.
const CA_VALIDITY_DAYS: i64 = 10 * 365;
/// Days a node or client certificate is valid from today.
const LEAF_VALIDITY_DAYS: i64 = 2 * 365;
/// Certificates are valid from yesterday, so that a node whose clock is
/// behind accepts a certificate generated today.
const CLOCK_SKEW_DAYS: i64 = 1;

/// What [`generate_dev`] wrote, in order.
#[derive(Clone, Debug, Default)]
pub struct Written {
    pub files: Vec<WrittenFile>,
}

/// One file written, and what it is.
#[derive(Clone, Debug)]
pub struct WrittenFile {
    pub path: PathBuf,
    pub what: String,
}

/// Writes into `out` a development CA (`ca.pem`, `ca.key`), a certificate
/// and key for each `(node id, AZ)` (`<id>.pem`, `<id>.key`: server and
/// client authentication) and for each client name (`client-<name>.pem`,
/// `client-<name>.key`: client authentication only). Keys are mode 0600 on
/// Unix. Existing files are replaced only with `force`.
///
/// Every problem with the names is reported at once, before anything is
/// generated or written.
pub fn generate_dev(
    out: &Path,
    nodes: &[(String, String)],
    clients: &[String],
    force: bool,
) -> Result<Written, CertsError> {
    check_names(nodes, clients)?;
    if !force {
        let planned = planned_paths(out, nodes, clients);
        let existing = files::existing(planned.iter().map(PathBuf::as_path));
        if !existing.is_empty() {
            return Err(CertsError::WouldOverwrite(existing));
        }
    }

    let today = Utc::now().date_naive();
    let mut written = Written::default();
    let mut outputs = Vec::new();
    let mut push = |path: PathBuf, contents: String, secret: bool, what: String| {
        written.files.push(WrittenFile {
            path: path.clone(),
            what,
        });
        outputs.push(Output {
            path,
            contents,
            secret,
        });
    };

    let ca = Ca::new(today)?;
    push(
        out.join(CA_CERT_FILE),
        ca.cert_pem.clone(),
        false,
        format!("CA certificate ({DEV_CA_NAME})"),
    );
    push(
        out.join(CA_KEY_FILE),
        ca.key_pem.clone(),
        true,
        "CA private key".to_owned(),
    );
    for (node_id, az) in nodes {
        let who = format!("node {node_id} in {az}");
        let params = node_params(node_id, az, today).map_err(|e| generate_error(&who, e))?;
        let (cert, key) = ca.issue(&who, params)?;
        let paths = TlsFiles::node(out, node_id);
        push(paths.cert, cert, false, format!("{who}: certificate"));
        push(paths.key, key, true, format!("{who}: private key"));
    }
    for name in clients {
        let who = format!("client {name}");
        let params = client_params(name, today).map_err(|e| generate_error(&who, e))?;
        let (cert, key) = ca.issue(&who, params)?;
        let paths = TlsFiles::client(out, name);
        push(paths.cert, cert, false, format!("{who}: certificate"));
        push(paths.key, key, true, format!("{who}: private key"));
    }

    files::write_all(out, &outputs, force)?;
    Ok(written)
}

/// Every problem with the names: characters and lengths, node ids that
/// cannot be DNS labels, and two of anything that would write the same file.
fn check_names(nodes: &[(String, String)], clients: &[String]) -> Result<(), CertsError> {
    let mut problems = Vec::new();
    if nodes.is_empty() {
        problems.push("at least one node (ID:AZ) is needed".to_owned());
    }
    let mut stems = Stems::new();
    for (node_id, az) in nodes {
        let id_problem = names::name_problem(node_id).or_else(|| names::dns_problem(node_id));
        if let Some(problem) = id_problem {
            problems.push(format!("node id {problem}"));
        } else {
            problems.extend(stems.claim(node_id, format!("node {node_id:?}")));
        }
        if let Some(problem) = names::name_problem(az) {
            problems.push(format!("AZ of node {node_id:?} {problem}"));
        }
    }
    for name in clients {
        if let Some(problem) = names::name_problem(name) {
            problems.push(format!("client name {problem}"));
        } else {
            problems.extend(stems.claim(&format!("client-{name}"), format!("client {name:?}")));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CertsError::InvalidNames(problems))
    }
}

/// Who writes which file stem (`<stem>.pem`, `<stem>.key`), compared in
/// lower case as some file systems compare names.
struct Stems(HashMap<String, (String, String)>);

impl Stems {
    fn new() -> Self {
        let ca = ("ca".to_owned(), "the CA".to_owned());
        Self(HashMap::from([("ca".to_owned(), ca)]))
    }

    /// Records that `who` writes `stem`, or says who already does.
    fn claim(&mut self, stem: &str, who: String) -> Option<String> {
        match self.0.get(&stem.to_lowercase()) {
            None => {
                self.0.insert(stem.to_lowercase(), (stem.to_owned(), who));
                None
            }
            Some((first_stem, first)) => {
                let note = if first_stem == stem {
                    ""
                } else {
                    " (file names are compared ignoring case)"
                };
                Some(format!(
                    "{who} and {first} would both write {stem}.pem{note}"
                ))
            }
        }
    }
}

fn planned_paths(out: &Path, nodes: &[(String, String)], clients: &[String]) -> Vec<PathBuf> {
    let mut paths = vec![out.join(CA_CERT_FILE), out.join(CA_KEY_FILE)];
    let leaves = nodes
        .iter()
        .map(|(id, _)| TlsFiles::node(out, id))
        .chain(clients.iter().map(|name| TlsFiles::client(out, name)));
    for leaf in leaves {
        paths.push(leaf.cert);
        paths.push(leaf.key);
    }
    paths
}

/// The development CA, kept in memory while it signs.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(today: NaiveDate) -> Result<Self, CertsError> {
        let what = "the development CA";
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(&[
            (DnType::OrganizationName, "vatio"),
            (DnType::CommonName, DEV_CA_NAME),
        ]);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, today, CA_VALIDITY_DAYS);
        let key = KeyPair::generate().map_err(|source| generate_error(what, source))?;
        let cert = params
            .self_signed(&key)
            .map_err(|source| generate_error(what, source))?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A new key and a certificate for it signed by this CA, both PEM.
    fn issue(&self, who: &str, params: CertificateParams) -> Result<(String, String), CertsError> {
        let key = KeyPair::generate().map_err(|source| generate_error(who, source))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| generate_error(who, source))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A node is a server to its peers and a client of them.
fn node_params(
    node_id: &str,
    az: &str,
    today: NaiveDate,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = leaf_params(today);
    params.distinguished_name = subject(&[
        (DnType::OrganizationName, "vatio"),
        (DnType::OrganizationalUnitName, "node"),
        (DnType::LocalityName, az),
        (DnType::CommonName, node_id),
    ]);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::DnsName(names::node_dns_name(node_id).try_into()?),
        SanType::URI(names::node_uri(node_id, az).try_into()?),
    ];
    Ok(params)
}

/// A client (gateway, CLI, load generator) only ever connects.
fn client_params(name: &str, today: NaiveDate) -> Result<CertificateParams, rcgen::Error> {
    let mut params = leaf_params(today);
    params.distinguished_name = subject(&[
        (DnType::OrganizationName, "vatio"),
        (DnType::OrganizationalUnitName, "client"),
        (DnType::CommonName, name),
    ]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.subject_alt_names = vec![SanType::URI(names::client_uri(name).try_into()?)];
    Ok(params)
}

fn leaf_params(today: NaiveDate) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::ExplicitNoCa;
    // ECDSA keys sign; they never encipher keys.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, today, LEAF_VALIDITY_DAYS);
    params
}

fn subject(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in parts {
        dn.push(ty.clone(), *value);
    }
    dn
}

/// Valid from midnight (UTC) yesterday to midnight `days` from `today`.
fn set_validity(params: &mut CertificateParams, today: NaiveDate, days: i64) {
    // month() is 1..=12 and day() 1..=31: both fit in a u8.
    let midnight =
        |date: NaiveDate| rcgen::date_time_ymd(date.year(), date.month() as u8, date.day() as u8);
    params.not_before = midnight(today - TimeDelta::days(CLOCK_SKEW_DAYS));
    params.not_after = midnight(today + TimeDelta::days(days));
}

fn generate_error(what: &str, source: rcgen::Error) -> CertsError {
    CertsError::Generate {
        what: what.to_owned(),
        source,
    }
}
