"""The identity side: OpenID discovery, the v2.0 token endpoint, and the device-code flow.

Shaped after Entra ID as ``docs/service-facts.md`` (§5, §6) describes what MSAL needs: HTTPS, an
``authorization_endpoint`` in discovery, token responses without ``scope``, Entra-shaped errors
(``invalid_client`` 401 for a wrong secret), certificate assertions verified against the
registered certificate, and a repeated assertion ``jti`` accepted.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from typing import Any

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bulkconn.emulator.core import EmulatorCore
from bulkconn.emulator.state import App, Tenant

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
Answer = tuple[int, dict[str, Any]]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def entra_error(status: int, error: str, code: int, description: str) -> Answer:
    now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    trace = str(uuid.uuid4())
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Timestamp: {now}",
        "error_codes": [code],
        "timestamp": now,
        "trace_id": trace,
        "correlation_id": str(uuid.uuid4()),
    }


def unknown_tenant(segment: str) -> Answer:
    return entra_error(
        400,
        "invalid_tenant",
        90002,
        f"Tenant '{segment}' not found. Check to make sure you have the correct tenant ID.",
    )


def discovery(core: EmulatorCore, tenant_segment: str) -> Answer:
    tenant = core.world.find(tenant_segment)
    if tenant is None:
        return unknown_tenant(tenant_segment)
    root = f"{core.base_url}/{tenant.tenant_id}"
    return 200, {
        "issuer": f"{root}/v2.0",
        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
        "token_endpoint": f"{root}/oauth2/v2.0/token",
        "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
        "jwks_uri": f"{core.base_url}/{tenant.tenant_id}/discovery/v2.0/keys",
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "grant_types_supported": ["client_credentials", "refresh_token", DEVICE_CODE_GRANT],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "emulator.local",
    }


def _resource_of(scope: str) -> str | None:
    for item in scope.split():
        if item.endswith("/.default"):
            return item[: -len("/.default")]
    return None


def _verify_assertion(core: EmulatorCore, tenant: Tenant, app: App, assertion: str) -> str | None:
    """None when the client assertion is valid for ``app``, else why not."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        return "The client assertion is not a valid JWT."
    thumbs: list[str] = []
    for thumb, pem in app.certificates.items():
        der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
        sha1 = _b64url(bytes.fromhex(thumb))
        sha256 = _b64url(hashlib.sha256(der).digest())
        if str(header.get("x5t", "")).rstrip("=") == sha1 or str(header.get("x5t#S256", "")).rstrip("=") == sha256:
            thumbs.append(pem)
    if not thumbs:
        return "The certificate with identifier used to sign the client assertion is not registered on application."
    cert = x509.load_pem_x509_certificate(thumbs[0].encode())
    audience = f"{core.base_url}/{tenant.tenant_id}/oauth2/v2.0/token"
    try:
        claims = jwt.decode(
            assertion,
            cert.public_key(),  # type: ignore[arg-type]
            algorithms=["RS256", "PS256"],
            audience=audience,
            options={"require": ["exp", "iss", "sub", "aud"]},
        )
    except jwt.PyJWTError as exc:
        return f"Client assertion failed signature validation ({type(exc).__name__})."
    if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
        return "The client assertion's iss and sub must be the client id."
    return None


def _client_credentials(core: EmulatorCore, tenant: Tenant, form: dict[str, str]) -> Answer:
    client_id = form.get("client_id", "").lower()
    app = tenant.apps.get(client_id)
    if app is None:
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory '{tenant.tenant_id}'. "
            "This can happen if the application has not been installed by the administrator of the tenant.",
        )
    resource = _resource_of(form.get("scope", ""))
    if resource is None:
        return entra_error(
            400,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. "
            "Client credential flows must have a scope value with /.default suffixed.",
        )
    if "client_secret" in form:
        if form["client_secret"] not in app.secrets:
            return entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the "
                f"secret being sent in the request is the client secret value for app '{client_id}'.",
            )
    elif "client_assertion" in form:
        core.assertions.append(form["client_assertion"])
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return entra_error(400, "invalid_request", 50027, "Invalid client_assertion_type.")
        problem = _verify_assertion(core, tenant, app, form["client_assertion"])
        if problem is not None:
            return entra_error(401, "invalid_client", 700027, problem)
    else:
        return entra_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    token, lifetime = core.issue_access_token(tenant, app.client_id, audience=resource, roles=app.roles)
    # No "scope" in the answer: real Entra leaves it out, and MSAL would cache under it (docs/service-facts.md §6).
    return 200, {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    }


def _user_tokens(core: EmulatorCore, tenant: Tenant, app: App, user: str, resource: str) -> dict[str, Any]:
    token, lifetime = core.issue_access_token(tenant, app.client_id, audience=resource, roles=app.roles, user=user)
    uid = str(uuid.uuid5(uuid.NAMESPACE_DNS, user))
    refresh = secrets.token_urlsafe(32)
    core.issued.append(refresh)
    core.refresh_tokens[refresh] = {
        "tenant": tenant.tenant_id,
        "client_id": app.client_id,
        "user": user,
        "resource": resource,
    }
    now = int(time.time())
    id_claims = {
        "aud": app.client_id,
        "iss": f"{core.base_url}/{tenant.tenant_id}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "oid": uid,
        "sub": uid,
        "tid": tenant.tenant_id,
        "preferred_username": user,
        "name": user.split("@")[0],
    }
    id_token = jwt.encode(id_claims, core.token_key, algorithm="HS256")
    core.issued.append(id_token)
    return {
        "token_type": "Bearer",
        "scope": f"{resource}/.default",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
        "refresh_token": refresh,
        "id_token": id_token,
        "client_info": _b64url(orjson.dumps({"uid": uid, "utid": tenant.tenant_id})),
    }


def device_authorization(core: EmulatorCore, tenant_segment: str, form: dict[str, str]) -> Answer:
    tenant = core.world.find(tenant_segment)
    if tenant is None:
        return unknown_tenant(tenant_segment)
    app = tenant.apps.get(form.get("client_id", "").lower())
    if app is None:
        return entra_error(400, "unauthorized_client", 700016, "Application not found in the directory.")
    resource = _resource_of(form.get("scope", "")) or "https://graph.microsoft.com"
    device_code = secrets.token_urlsafe(24)
    user_code = secrets.token_hex(4).upper()
    approved = "admin@" + tenant.domain if core.options.auto_approve_device_codes else None
    core.device_codes[device_code] = {
        "tenant": tenant.tenant_id,
        "client_id": app.client_id,
        "user_code": user_code,
        "resource": resource,
        "user": approved,
        "expires": time.time() + 900,
    }
    uri = f"{core.base_url}/_emulator/device"
    return 200, {
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": uri,
        "expires_in": 900,
        "interval": 1,
        "message": f"To sign in, use a web browser to open the page {uri} and enter the code {user_code} to "
        "authenticate.",
    }


def approve_device_code(core: EmulatorCore, user_code: str, user: str) -> bool:
    for entry in core.device_codes.values():
        if entry["user_code"] == user_code.upper():
            entry["user"] = user
            return True
    return False


def _device_code_grant(core: EmulatorCore, tenant: Tenant, form: dict[str, str]) -> Answer:
    entry = core.device_codes.get(form.get("device_code", ""))
    if entry is None or entry["tenant"] != tenant.tenant_id:
        return entra_error(400, "invalid_grant", 70000, "The provided device code is not valid.")
    if time.time() > entry["expires"]:
        return entra_error(400, "expired_token", 70020, "The provided code has expired.")
    if entry["user"] is None:
        return entra_error(
            400,
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        )
    del core.device_codes[form["device_code"]]
    app = tenant.apps[entry["client_id"]]
    return 200, _user_tokens(core, tenant, app, entry["user"], entry["resource"])


def _refresh_grant(core: EmulatorCore, tenant: Tenant, form: dict[str, str]) -> Answer:
    entry = core.refresh_tokens.pop(form.get("refresh_token", ""), None)
    if entry is None or entry["tenant"] != tenant.tenant_id:
        return entra_error(
            400, "invalid_grant", 9002313, "Invalid request. The refresh token is malformed or not valid."
        )
    app = tenant.apps[entry["client_id"]]
    resource = _resource_of(form.get("scope", "")) or entry["resource"]
    return 200, _user_tokens(core, tenant, app, entry["user"], resource)


def token(core: EmulatorCore, tenant_segment: str, form: dict[str, str]) -> Answer:
    """``POST /{tenant}/oauth2/v2.0/token``."""
    tenant = core.world.find(tenant_segment)
    if tenant is None:
        return unknown_tenant(tenant_segment)
    core.stats.token_requests[tenant.alias] += 1
    grant = form.get("grant_type", "")
    if grant == "client_credentials":
        status, body = _client_credentials(core, tenant, form)
    elif grant == DEVICE_CODE_GRANT:
        status, body = _device_code_grant(core, tenant, form)
    elif grant == "refresh_token":
        status, body = _refresh_grant(core, tenant, form)
    else:
        status, body = entra_error(
            400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
        )
    if status != 200 and body.get("error") != "authorization_pending":
        core.stats.token_failures[tenant.alias] += 1
    return status, body
