//! Simulated devices: identities, roles, and the check-in and report plists each one sends.

use super::xml::{CommandRef, PlistWriter};

/// How a simulated device behaves when pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Wakes on a push, reports Idle, runs the command it gets, reports the result.
    Online,
    /// Its push is accepted but it never answers.
    Offline,
    /// Its token is in the mock APNs' unregistered set: pushes get 410.
    Unregistered,
}

/// One device of the fleet. Every identifier is unique within a fleet.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// `UDID`.
    pub udid: String,
    /// `SerialNumber`.
    pub serial: String,
    /// Raw 32-byte APNs token.
    pub token: [u8; 32],
    /// `PushMagic`.
    pub push_magic: String,
    /// `DeviceName`.
    pub device_name: String,
    /// `IMEI`.
    pub imei: String,
    /// Hardware model: product name, model name, model number.
    pub model: &'static Model,
    /// OS version and build.
    pub os: &'static OsVersion,
    /// Behaviour under push.
    pub role: Role,
}

/// A hardware model as devices report it.
#[derive(Debug)]
pub struct Model {
    /// `ProductName`, e.g. `iPhone15,4`.
    pub product_name: &'static str,
    /// `ModelName`, e.g. `iPhone`.
    pub model_name: &'static str,
    /// `Model`, e.g. `MPUF3J/A`.
    pub model: &'static str,
    /// What people call it, e.g. `iPhone 15`: the start of a [`SimDevice::display_name`].
    pub marketing_name: &'static str,
}

/// An OS release as devices report it.
#[derive(Debug)]
pub struct OsVersion {
    /// `OSVersion`.
    pub version: &'static str,
    /// `BuildVersion`.
    pub build: &'static str,
}

const MODELS: [Model; 5] = [
    Model {
        product_name: "iPhone15,4",
        model_name: "iPhone",
        model: "MPUF3J/A",
        marketing_name: "iPhone 15",
    },
    Model {
        product_name: "iPhone14,7",
        model_name: "iPhone",
        model: "MNCE3J/A",
        marketing_name: "iPhone 14",
    },
    Model {
        product_name: "iPhone16,1",
        model_name: "iPhone",
        model: "MTMH3J/A",
        marketing_name: "iPhone 15 Pro",
    },
    Model {
        product_name: "iPad13,18",
        model_name: "iPad",
        model: "MPQ03J/A",
        marketing_name: "iPad",
    },
    Model {
        product_name: "iPad14,8",
        model_name: "iPad Air",
        model: "MUWF3J/A",
        marketing_name: "iPad Air",
    },
];

const OS_VERSIONS: [OsVersion; 4] = [
    OsVersion {
        version: "18.5",
        build: "22F76",
    },
    OsVersion {
        version: "18.1",
        build: "22B83",
    },
    OsVersion {
        version: "17.6.1",
        build: "21G93",
    },
    OsVersion {
        version: "17.5",
        build: "21F79",
    },
];

/// How many devices of `n` get a role with `fraction` (rounded to the nearest device).
pub fn count_for(n: usize, fraction: f64) -> usize {
    ((n as f64) * fraction.clamp(0.0, 1.0)).round() as usize
}

/// How many values the first field of a UDID takes here (its three hex digits after `00008`):
/// the most tenants [`UdidLayout::ByTenant`] can keep apart.
pub const UDID_PREFIXES: usize = 0x1000;

/// Where the devices' UDIDs fall in the key order the server's store keeps them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UdidLayout {
    /// At random, as real UDIDs are: one tenant's devices are spread over the whole key order.
    #[default]
    Random,
    /// Tenant by tenant: device `i` (of tenant `i % tenants`, as the fleet assigns them) gets a
    /// UDID among its tenant's only, so each tenant's devices are adjacent in key order. No
    /// real fleet looks so; it shows what a store keyed by tenant first would gain (`fleet
    /// --udids-by-tenant`). Up to [`UDID_PREFIXES`] tenants.
    ByTenant(usize),
}

impl UdidLayout {
    /// The first field of device `index`'s UDID, from `random` (below [`UDID_PREFIXES`]).
    fn prefix(self, index: u32, random: u16) -> u16 {
        match self {
            UdidLayout::Random => random,
            UdidLayout::ByTenant(tenants) => {
                let tenants = tenants.clamp(1, UDID_PREFIXES) as u32;
                let width = UDID_PREFIXES as u32 / tenants;
                let first = (index % tenants) * width;
                (first + u32::from(random) % width) as u16
            }
        }
    }
}

/// `n` devices from `seed`: `count_for(n, unregistered)` unregistered, `count_for(n, offline)`
/// offline (capped so the two never exceed `n`), the rest online; roles are spread over the
/// fleet at random. The same seed gives the same fleet.
pub fn generate(n: usize, offline: f64, unregistered: f64, seed: u64) -> Vec<SimDevice> {
    generate_with(n, offline, unregistered, seed, UdidLayout::Random)
}

/// [`generate`] with the UDIDs laid out by `layout`; everything else is the same fleet.
pub fn generate_with(
    n: usize,
    offline: f64,
    unregistered: f64,
    seed: u64,
    layout: UdidLayout,
) -> Vec<SimDevice> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let n_unregistered = count_for(n, unregistered);
    let n_offline = count_for(n, offline).min(n - n_unregistered);
    let mut roles: Vec<Role> = std::iter::repeat_n(Role::Unregistered, n_unregistered)
        .chain(std::iter::repeat_n(Role::Offline, n_offline))
        .chain(std::iter::repeat_n(
            Role::Online,
            n - n_unregistered - n_offline,
        ))
        .collect();
    rng.shuffle(&mut roles);
    roles
        .into_iter()
        .enumerate()
        .map(|(i, role)| device(i as u32, role, &mut rng, layout))
        .collect()
}

fn device(index: u32, role: Role, rng: &mut fastrand::Rng, layout: UdidLayout) -> SimDevice {
    let mut token = [0u8; 32];
    rng.fill(&mut token);
    // The first four bytes carry the index: tokens are unique whatever the generator does.
    token[..4].copy_from_slice(&index.to_be_bytes());
    let model = &MODELS[rng.usize(..MODELS.len())];
    let os = &OS_VERSIONS[rng.usize(..OS_VERSIONS.len())];
    SimDevice {
        udid: format!(
            "00008{:03X}-{:08X}{:08X}",
            layout.prefix(index, rng.u16(..UDID_PREFIXES as u16)),
            index,
            rng.u32(..)
        ),
        serial: format!("F{:07}{:04X}", index, rng.u16(..)),
        token,
        push_magic: format!(
            "{:08X}-{:04X}-4{:03X}-{:04X}-{:012X}",
            index,
            rng.u16(..),
            rng.u16(..0x1000),
            rng.u16(..),
            rng.u64(..1 << 48)
        ),
        device_name: format!("{} {:05}", model.model_name, index),
        imei: format!(
            "35 {:06} {:06} {}",
            rng.u32(..1_000_000),
            index % 1_000_000,
            rng.u8(..10)
        ),
        model,
        os,
        role,
    }
}

impl SimDevice {
    /// A name as a person gives a device, `iPhone 15 (042)`: the model's marketing name and
    /// the device's number in the fleet. (The fleet's devices keep the plain `iPhone 00042`.)
    pub fn display_name(&self, index: usize) -> String {
        format!("{} ({index:03})", self.model.marketing_name)
    }

    /// The token as APNs paths and the mock spell it: lowercase hex.
    pub fn token_hex(&self) -> String {
        hex::encode(self.token)
    }

    fn checkin(&self, message_type: &str, topic: &str, capacity: usize) -> PlistWriter {
        let mut w = PlistWriter::new(capacity);
        w.string("MessageType", message_type)
            .string("Topic", topic)
            .string("UDID", &self.udid);
        w
    }

    /// `Authenticate`: the device describes itself.
    pub fn authenticate(&self, topic: &str) -> Vec<u8> {
        let mut w = self.checkin("Authenticate", topic, 900);
        w.string("BuildVersion", self.os.build)
            .string("DeviceName", &self.device_name)
            .string("IMEI", &self.imei)
            .string("Model", self.model.model)
            .string("ModelName", self.model.model_name)
            .string("OSVersion", self.os.version)
            .string("ProductName", self.model.product_name)
            .string("SerialNumber", &self.serial);
        w.finish()
    }

    /// `TokenUpdate` on the device channel: completes enrollment.
    pub fn token_update(&self, topic: &str) -> Vec<u8> {
        let mut w = self.checkin("TokenUpdate", topic, 700);
        w.boolean("AwaitingConfiguration", false)
            .string("PushMagic", &self.push_magic)
            .data("Token", &self.token);
        w.finish()
    }

    /// Command report `Idle`: "I am awake, what do you have for me?".
    pub fn idle(&self) -> Vec<u8> {
        let mut w = PlistWriter::new(350);
        w.string("Status", "Idle").string("UDID", &self.udid);
        w.finish()
    }

    /// Command report `Acknowledged` for `command`; a DeviceInformation command gets its
    /// `QueryResponses`.
    pub(crate) fn acknowledged(&self, command: &CommandRef) -> Vec<u8> {
        let mut w = PlistWriter::new(1300);
        w.string("CommandUUID", &command.uuid)
            .string("Status", "Acknowledged")
            .string("UDID", &self.udid);
        if command.request_type == "DeviceInformation" {
            w.begin_dict("QueryResponses")
                .string("BuildVersion", self.os.build)
                .string("DeviceName", &self.device_name)
                .string("IMEI", &self.imei)
                .boolean("IsSupervised", true)
                .string("Model", self.model.model)
                .string("ModelName", self.model.model_name)
                .string("OSVersion", self.os.version)
                .string("ProductName", self.model.product_name)
                .string("SerialNumber", &self.serial)
                .string("UDID", &self.udid)
                .end_dict();
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn roles_match_the_fractions_and_identifiers_are_unique() {
        let fleet = generate(1000, 0.1, 0.05, 7);
        let count = |r: Role| fleet.iter().filter(|d| d.role == r).count();
        assert_eq!(count(Role::Unregistered), 50);
        assert_eq!(count(Role::Offline), 100);
        assert_eq!(count(Role::Online), 850);
        for field in [
            |d: &SimDevice| d.udid.clone(),
            |d: &SimDevice| d.serial.clone(),
            |d: &SimDevice| d.token_hex(),
            |d: &SimDevice| d.push_magic.clone(),
        ] {
            let unique: HashSet<String> = fleet.iter().map(field).collect();
            assert_eq!(unique.len(), fleet.len());
        }
        // Same seed, same fleet; roles are spread, not all at the front.
        let again = generate(1000, 0.1, 0.05, 7);
        assert!(fleet.iter().zip(&again).all(|(a, b)| a.udid == b.udid));
        assert!(fleet[..150].iter().any(|d| d.role == Role::Online));
    }

    #[test]
    fn udids_by_tenant_put_each_tenants_devices_together_and_change_nothing_else() {
        let (n, tenants) = (3000, 1000);
        let random = generate(n, 0.1, 0.05, 7);
        let by_tenant = generate_with(n, 0.1, 0.05, 7, UdidLayout::ByTenant(tenants));
        let tenant_order = |fleet: &[SimDevice]| {
            let mut keyed: Vec<(&str, usize)> = fleet
                .iter()
                .enumerate()
                .map(|(i, d)| (d.udid.as_str(), i % tenants))
                .collect();
            keyed.sort();
            keyed.windows(2).all(|w| w[0].1 <= w[1].1)
        };
        assert!(tenant_order(&by_tenant));
        assert!(!tenant_order(&random));
        let unique: HashSet<&str> = by_tenant.iter().map(|d| d.udid.as_str()).collect();
        assert_eq!(unique.len(), n);
        for (a, b) in random.iter().zip(&by_tenant) {
            assert_eq!((a.role, a.token, &a.serial), (b.role, b.token, &b.serial));
            assert_eq!(a.udid[9..], b.udid[9..], "only the first field moves");
        }
        // One tenant is the random layout; more tenants than the prefixes hold still give
        // UDIDs of the same shape.
        assert!(generate_with(10, 0.0, 0.0, 7, UdidLayout::ByTenant(1))
            .iter()
            .zip(generate(10, 0.0, 0.0, 7))
            .all(|(a, b)| a.udid == b.udid));
        let many = generate_with(10, 0.0, 0.0, 7, UdidLayout::ByTenant(UDID_PREFIXES * 2));
        assert!(many.iter().all(|d| d.udid.len() == random[0].udid.len()));
    }

    #[test]
    fn fractions_never_exceed_the_fleet() {
        let fleet = generate(10, 0.8, 0.5, 1);
        assert_eq!(fleet.len(), 10);
        assert_eq!(fleet.iter().filter(|d| d.role == Role::Online).count(), 0);
    }

    #[test]
    fn messages_carry_what_the_fixture_builders_would() {
        let d = &generate(3, 0.0, 0.0, 3)[1];
        let topic = "com.apple.mgmt.External.test";
        let auth: plist::Dictionary = plist::from_bytes(&d.authenticate(topic)).unwrap();
        assert_eq!(auth["MessageType"].as_string(), Some("Authenticate"));
        assert_eq!(auth["Topic"].as_string(), Some(topic));
        assert_eq!(auth["UDID"].as_string(), Some(d.udid.as_str()));
        assert_eq!(auth["SerialNumber"].as_string(), Some(d.serial.as_str()));
        assert_eq!(auth["OSVersion"].as_string(), Some(d.os.version));
        assert_eq!(auth["ProductName"].as_string(), Some(d.model.product_name));

        let tu: plist::Dictionary = plist::from_bytes(&d.token_update(topic)).unwrap();
        assert_eq!(tu["MessageType"].as_string(), Some("TokenUpdate"));
        assert_eq!(tu["Token"].as_data(), Some(&d.token[..]));
        assert_eq!(tu["PushMagic"].as_string(), Some(d.push_magic.as_str()));

        let idle: plist::Dictionary = plist::from_bytes(&d.idle()).unwrap();
        assert_eq!(idle["Status"].as_string(), Some("Idle"));

        let cmd = CommandRef {
            uuid: "U-1".into(),
            request_type: "DeviceInformation".into(),
        };
        let ack: plist::Dictionary = plist::from_bytes(&d.acknowledged(&cmd)).unwrap();
        assert_eq!(ack["Status"].as_string(), Some("Acknowledged"));
        assert_eq!(ack["CommandUUID"].as_string(), Some("U-1"));
        let q = ack["QueryResponses"].as_dictionary().unwrap();
        assert_eq!(q["SerialNumber"].as_string(), Some(d.serial.as_str()));
    }
}
