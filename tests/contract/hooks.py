"""schemathesis hooks for the contract run (tests/contract/schemathesis.toml).

A schema cannot say that a mapping's certificationId names a certificate of the account,
that siteId equals the account in the path, or that caCertificates parses as X.509. For the requests schemathesis generates as
valid, these hooks fill those fields in with what the test created, so that a refusal means
the schema and the API disagree; requests generated as invalid are sent as generated.
"""

import os

import schemathesis

CERTIFICATE = int(os.environ["CONTRACT_CERTIFICATE_ID"])
ACCOUNT = os.environ["CONTRACT_ACCOUNT"]
# The user whose token the run uses: deleting it would turn the rest of the run into 401s.
OWN_USER = int(os.environ["CONTRACT_USER_ID"])
# A CA certificate (PEM): whether caCertificates holds readable X.509 is not a schema's to say.
CA_PEM = os.environ["CONTRACT_CA_PEM"]


def _positive(case):
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


def _path_is_valid(case):
    meta = getattr(case, "meta", None)
    if meta is None:
        return True
    for location, info in meta.components.items():
        if str(getattr(location, "value", location)) == "path":
            return info.mode.is_positive
    return True


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    # Every request is about the run's account, but where the path itself was generated
    # invalid: then the account id may be what is invalid, and is sent as generated.
    path = case.operation.path
    if case.path_parameters is not None and "accountId" in case.path_parameters:
        if _positive(case) or _path_is_valid(case):
            case.path_parameters["accountId"] = ACCOUNT
    if case.method.upper() == "DELETE" and case.path_parameters:
        # The run's own user and certificate stay, whatever the case was generated as:
        # without them the rest of the run would only see 401s and "no such certificate".
        ident = str(case.path_parameters.get("id"))
        if path.endswith("/users/{id}") and ident == str(OWN_USER):
            case.path_parameters["id"] = OWN_USER + 1_000_000
        if path.endswith("/certificates/{id}") and ident == str(CERTIFICATE):
            case.path_parameters["id"] = CERTIFICATE + 1_000_000
    if not _positive(case):
        return
    if "/configuration/ac-common/mtls" in path and case.method.upper() in ("POST", "PUT"):
        items = case.body if isinstance(case.body, list) else [case.body]
        for m in items:
            if isinstance(m, dict):
                m["certificationId"] = CERTIFICATE
                if "siteId" in m:
                    m["siteId"] = ACCOUNT
                if "credentialId" in m:
                    m["credentialId"] = None
                if m.get("caCertificates"):
                    m["caCertificates"] = CA_PEM
