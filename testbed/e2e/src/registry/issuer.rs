//! The token service: ES256 JWTs for the users it knows, as distribution's token
//! authentication expects them.

use super::*;

/// The token service's signing key and its self-signed certificate (the registry's
/// `rootcertbundle`).
pub(super) struct Signer {
    pub(super) key: EcdsaKeyPair,
    pub(super) cert_pem: String,
    /// base64url of the JWT header, the same for every token.
    header: String,
}

impl Signer {
    pub(super) fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("a P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("loading the P-256 key");
        let cert_key = KeyPair::try_from(pkcs8.as_ref()).expect("the P-256 key for rcgen");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "e2e token signer");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .self_signed(&cert_key)
            .expect("the token signer certificate");
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "kid": libtrust_key_id(&cert_key.subject_public_key_info()),
        });
        Self {
            key,
            cert_pem: cert.pem(),
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
        }
    }

    /// A JWT of `claims`: header.payload.signature, each base64url; ES256 signatures are the
    /// 64 bytes r‖s (JWS), not DER.
    fn sign(&self, claims: &serde_json::Value, rng: &SystemRandom) -> String {
        let signed = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(rng, signed.as_bytes())
            .expect("signing a token");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

/// libtrust's key id, which distribution gives each key of its `rootcertbundle`: the first 30
/// bytes of the SHA-256 of the DER SubjectPublicKeyInfo, in base32 (standard alphabet, no
/// padding: 30 bytes are 48 characters), in groups of 4 joined by ':'.
fn libtrust_key_id(spki: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    let mut base32 = String::new();
    for chunk in digest.as_ref()[..30].chunks(5) {
        let bits = chunk.iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
        for i in (0..8).rev() {
            base32.push(char::from(ALPHABET[(bits >> (i * 5)) as usize & 31]));
        }
    }
    let groups: Vec<&str> = (0..base32.len())
        .step_by(4)
        .map(|i| &base32[i..i + 4])
        .collect();
    groups.join(":")
}

pub(super) struct TokenService {
    pub(super) users: Vec<RegistryUser>,
    pub(super) signer: Signer,
    pub(super) rng: SystemRandom,
}

/// `GET /token?service=S&scope=repository:NAME:ACTIONS…` with Basic credentials: a token
/// granting, per requested repository, the requested actions the user may have. No anonymous
/// tokens: missing or wrong credentials get 401.
pub(super) async fn token(
    State(service): State<Arc<TokenService>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(user) = basic_user(&headers, &service.users) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"e2e-token-issuer\"")],
            "unauthorized\n",
        )
            .into_response();
    };
    let mut access = Vec::new();
    for (name, value) in query.as_deref().unwrap_or("").split('&').filter_map(|p| {
        let (name, value) = p.split_once('=')?;
        Some((percent_decode(name), percent_decode(value)))
    }) {
        match name.as_str() {
            "service" if value != SERVICE => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("unknown service {value}\n"),
                )
                    .into_response();
            }
            "scope" => access.extend(grant(&value, user)),
            _ => {}
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut jti = [0u8; 16];
    service.rng.fill(&mut jti).expect("random bytes");
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user.name,
        "aud": SERVICE,
        "exp": now + TOKEN_SECONDS,
        "nbf": now,
        "iat": now,
        "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "access": access,
    });
    let jwt = service.signer.sign(&claims, &service.rng);
    let issued_at = i64::try_from(now)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or_else(Timestamp::now);
    let body = serde_json::json!({
        "token": jwt,
        "access_token": jwt,
        "expires_in": TOKEN_SECONDS,
        "issued_at": issued_at.to_string(),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The user whose name and password the request's Basic credentials are.
fn basic_user<'a>(headers: &HeaderMap, users: &'a [RegistryUser]) -> Option<&'a RegistryUser> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (name, password) = decoded.split_once(':')?;
    users
        .iter()
        .find(|u| u.name == name && u.password == password)
}

/// The access entry a scope `repository:NAME:ACTIONS` grants `user`: the actions it asks for
/// that the user may have; none for other resource types or when nothing is left.
fn grant(scope: &str, user: &RegistryUser) -> Option<serde_json::Value> {
    let rest = scope.strip_prefix("repository:")?;
    // Names have no ':' of their own but may carry a registry port; actions never do.
    let (name, actions) = rest.rsplit_once(':')?;
    let granted: Vec<&str> = actions
        .split(',')
        .filter(|a| user.actions.contains(a))
        .collect();
    (!granted.is_empty())
        .then(|| serde_json::json!({"type": "repository", "name": name, "actions": granted}))
}

/// `application/x-www-form-urlencoded` decoding: `%XX` escapes and `+` for a space.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
