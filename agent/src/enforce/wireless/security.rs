//! How strong a network's security is, ranked, as read from NetworkManager's `key-mgmt`
//! and wpa_supplicant's `key_mgmt`.

use std::fmt;

/// Wi-Fi security, weakest first: `Ord` is the ranking.
///
/// WPA3-Enterprise is either the 192-bit suite (`wpa-eap-suite-b-192`,
/// `WPA-EAP-SUITE-B-192`) or WPA-EAP with protected management frames *required*
/// (keyfile `pmf=3`, wpa_supplicant `ieee80211w=2`): the Wi-Fi Alliance's
/// "WPA3-Enterprise only" mode is exactly WPA2-Enterprise's AKM with PMF mandatory.
/// OWE encrypts but authenticates nobody: it ranks with open networks, below WEP, so no
/// policy minimum ever accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Security {
    Open,
    Owe,
    Wep,
    WpaPsk,
    Sae,
    Wpa2Enterprise,
    Wpa3Enterprise,
}

impl Security {
    pub fn name(self) -> &'static str {
        match self {
            Security::Open => "open",
            Security::Owe => "owe",
            Security::Wep => "wep",
            Security::WpaPsk => "wpa2-psk",
            Security::Sae => "wpa3-sae",
            Security::Wpa2Enterprise => "wpa2-enterprise",
            Security::Wpa3Enterprise => "wpa3-enterprise",
        }
    }

    /// A policy's `min_security` ("wpa2-psk", "wpa3-sae", "wpa2-enterprise",
    /// "wpa3-enterprise").
    pub fn from_policy(name: &str) -> Option<Self> {
        match name {
            "wpa2-psk" => Some(Security::WpaPsk),
            "wpa3-sae" => Some(Security::Sae),
            "wpa2-enterprise" => Some(Security::Wpa2Enterprise),
            "wpa3-enterprise" => Some(Security::Wpa3Enterprise),
            _ => None,
        }
    }

    /// One NetworkManager `[wifi-security] key-mgmt` value (lower case). `None`: unknown.
    pub fn from_nm_key_mgmt(key_mgmt: &str, has_wep_key: bool, pmf_required: bool) -> Option<Self> {
        Some(match key_mgmt {
            "none" if has_wep_key => Security::Wep,
            "none" => Security::Open,
            // Dynamic WEP: 802.1X with WEP keys.
            "ieee8021x" => Security::Wep,
            "owe" => Security::Owe,
            "wpa-psk" => Security::WpaPsk,
            "sae" => Security::Sae,
            "wpa-eap" if pmf_required => Security::Wpa3Enterprise,
            "wpa-eap" => Security::Wpa2Enterprise,
            "wpa-eap-suite-b-192" => Security::Wpa3Enterprise,
            _ => return None,
        })
    }

    /// One wpa_supplicant `key_mgmt` token (upper case). `None`: unknown.
    pub fn from_supplicant_key_mgmt(
        token: &str,
        has_wep_key: bool,
        pmf_required: bool,
    ) -> Option<Self> {
        Some(match token {
            "NONE" if has_wep_key => Security::Wep,
            "NONE" => Security::Open,
            "IEEE8021X" => Security::Wep,
            "OWE" => Security::Owe,
            "WPA-PSK" | "WPA-PSK-SHA256" | "FT-PSK" => Security::WpaPsk,
            "SAE" | "SAE-EXT-KEY" | "FT-SAE" | "FT-SAE-EXT-KEY" => Security::Sae,
            "WPA-EAP" | "WPA-EAP-SHA256" | "FT-EAP" | "FT-EAP-SHA384" | "WPA-EAP-SHA384"
                if pmf_required =>
            {
                Security::Wpa3Enterprise
            }
            "WPA-EAP" | "WPA-EAP-SHA256" | "FT-EAP" | "FT-EAP-SHA384" | "WPA-EAP-SHA384" => {
                Security::Wpa2Enterprise
            }
            "WPA-EAP-SUITE-B" | "WPA-EAP-SUITE-B-192" => Security::Wpa3Enterprise,
            _ => return None,
        })
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A network profile as read from a keyfile or a `network={}` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// `None`: the profile names no SSID.
    pub ssid: Option<String>,
    pub security: Security,
    /// Why the security was judged so when it is not plain (an unknown key management
    /// is judged open).
    pub note: Option<String>,
}

impl Network {
    pub fn label(&self) -> String {
        match &self.ssid {
            Some(s) => format!("{s:?} ({})", self.security),
            None => format!("<no ssid> ({})", self.security),
        }
    }
}
