//! GeoIP: country, region and city of an IP address from a MaxMind DB file.
//!
//! One reader is shared by every request. The file's layout is checked at
//! load: a database that is not of a City or Country layout decodes as empty
//! records without any error, so it is refused loudly instead of silently
//! giving every event an empty `geo`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use weir_core::headers::canonical;

use maxminddb::Reader;
use serde::Deserialize;

use crate::model::Geo;

/// Why a GeoIP database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    #[error("GeoIP database {path}: {source}")]
    Open {
        path: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
    #[error("GeoIP database {path}: layout '{database_type}' is not supported; use a City or Country database (GeoIP2/GeoLite2/DB-IP City or Country)")]
    Layout {
        path: PathBuf,
        database_type: String,
    },
}

/// The bytes of the database: mapped from the file, or read into memory.
enum Source {
    Mapped(maxminddb::Mmap),
    Memory(Vec<u8>),
}

impl AsRef<[u8]> for Source {
    fn as_ref(&self) -> &[u8] {
        match self {
            Source::Mapped(m) => m.as_ref(),
            Source::Memory(v) => v,
        }
    }
}

/// A loaded GeoIP database.
pub struct GeoIp {
    reader: Reader<Source>,
    /// e.g. `GeoIP2-City (built 2023-04-15)`, for logs and `/readyz`.
    pub description: String,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

// Only the fields Weir reports: decoding these is about twice as fast as the
// crate's full `geoip2::City`.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<Country<'a>>,
    #[serde(borrow)]
    subdivisions: Option<Vec<Named<'a>>>,
    #[serde(borrow)]
    city: Option<Named<'a>>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct Names<'a> {
    en: Option<&'a str>,
}

impl GeoIp {
    /// Opens `path`, mapped (the default) or read into memory.
    pub fn open(path: &Path, in_memory: bool) -> Result<GeoIp, GeoIpError> {
        let open_error = |source| GeoIpError::Open {
            path: path.to_owned(),
            source,
        };
        let source = if in_memory {
            Source::Memory(std::fs::read(path).map_err(|e| open_error(e.into()))?)
        } else {
            let file = std::fs::File::open(path).map_err(|e| open_error(e.into()))?;
            // SAFETY: the map is read-only; replacing a database is done by
            // writing a new file and renaming it over the old one, never in place.
            let map = unsafe { maxminddb::Mmap::map(&file) }.map_err(|e| open_error(e.into()))?;
            Source::Mapped(map)
        };
        let reader = Reader::from_source(source).map_err(open_error)?;
        let database_type = reader.metadata().database_type.clone();
        if !supported_layout(&database_type) {
            return Err(GeoIpError::Layout {
                path: path.to_owned(),
                database_type,
            });
        }
        let built = reader.metadata().build_epoch;
        Ok(GeoIp {
            description: format!("{database_type} (build epoch {built})"),
            reader,
        })
    }

    /// The location of `ip`; `None` when the database has nothing for it.
    pub fn lookup(&self, ip: IpAddr) -> Option<Geo> {
        let ip = canonical(ip);
        let found = self.reader.lookup(ip).ok()?;
        let record: Record<'_> = found.decode().ok()??;
        let geo = Geo {
            country: record.country.and_then(|c| c.iso_code).map(str::to_owned),
            region: record
                .subdivisions
                .and_then(|s| s.into_iter().next())
                .and_then(|s| s.names)
                .and_then(|n| n.en)
                .map(str::to_owned),
            city: record
                .city
                .and_then(|c| c.names)
                .and_then(|n| n.en)
                .map(str::to_owned),
        };
        (geo != Geo::default()).then_some(geo)
    }
}

/// City and Country layouts of MaxMind, DB-IP and IPinfo-style GeoIP2 files.
fn supported_layout(database_type: &str) -> bool {
    ["City", "Country", "Enterprise"]
        .iter()
        .any(|kind| database_type.contains(kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Serialize)]
    struct Names {
        en: &'static str,
    }
    #[derive(serde::Serialize)]
    struct NamedRec {
        names: Names,
    }
    #[derive(serde::Serialize)]
    struct CountryRec {
        iso_code: &'static str,
    }
    #[derive(serde::Serialize)]
    struct CityRec {
        country: CountryRec,
        subdivisions: Vec<NamedRec>,
        city: NamedRec,
    }

    fn write_fixture(dir: &Path, database_type: &str) -> PathBuf {
        let mut writer = mmdb_writer::Writer::new(database_type);
        let rec = CityRec {
            country: CountryRec { iso_code: "NL" },
            subdivisions: vec![NamedRec {
                names: Names {
                    en: "North Holland",
                },
            }],
            city: NamedRec {
                names: Names { en: "Amsterdam" },
            },
        };
        writer
            .insert("192.0.2.0/24".parse::<ipnet::IpNet>().unwrap(), &rec)
            .unwrap();
        writer
            .insert("2001:db8::/32".parse::<ipnet::IpNet>().unwrap(), &rec)
            .unwrap();
        let mut only_country = BTreeMap::new();
        only_country.insert("country", CountryRec { iso_code: "JP" });
        writer
            .insert(
                "198.51.100.0/24".parse::<ipnet::IpNet>().unwrap(),
                &only_country,
            )
            .unwrap();
        let path = dir.join(format!("{database_type}.mmdb"));
        std::fs::write(&path, writer.to_bytes().unwrap()).unwrap();
        path
    }

    #[test]
    fn looks_up_v4_v6_and_mapped_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_fixture(dir.path(), "Weir-Test-City");
        for in_memory in [false, true] {
            let geo = GeoIp::open(&path, in_memory).unwrap();
            let amsterdam = Some(Geo {
                country: Some("NL".into()),
                region: Some("North Holland".into()),
                city: Some("Amsterdam".into()),
            });
            assert_eq!(geo.lookup("192.0.2.7".parse().unwrap()), amsterdam);
            assert_eq!(geo.lookup("::ffff:192.0.2.7".parse().unwrap()), amsterdam);
            assert_eq!(geo.lookup("2001:db8::1".parse().unwrap()), amsterdam);
            assert_eq!(
                geo.lookup("198.51.100.1".parse().unwrap()),
                Some(Geo {
                    country: Some("JP".into()),
                    region: None,
                    city: None
                })
            );
            // A miss is not an error.
            assert_eq!(geo.lookup("203.0.113.1".parse().unwrap()), None);
            assert!(geo.description.starts_with("Weir-Test-City"));
        }
    }

    #[test]
    fn an_unsupported_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_fixture(dir.path(), "ip-location-db-flat");
        let err = GeoIp::open(&path, false).unwrap_err().to_string();
        assert!(
            err.contains("layout 'ip-location-db-flat' is not supported"),
            "{err}"
        );
        let err = GeoIp::open(&dir.path().join("missing.mmdb"), false)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("GeoIP database "), "{err}");
    }
}
