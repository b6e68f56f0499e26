"""Optional (IDP_PASSWORD_GRANT_ID_TOKEN=1 / server.py --password-grant-id-token):
make the password grant return an id_token when scope contains `openid`,
like Keycloak does. Stock DOT/oauthlib never does this for grant_type=password
(only authorization_code, implicit/hybrid and refresh_token get an id_token).
"""
from oauthlib.oauth2.rfc6749.grant_types import ResourceOwnerPasswordCredentialsGrant
from oauthlib.openid import Server
from oauthlib.openid.connect.core.grant_types.base import GrantTypeBase


class _IdTokenHandler:
    """Wraps the BearerToken handler: adds the id_token right after the access
    token is minted (before save_token(), so DOT links the IDToken row to the
    AccessToken). oauthlib's password grant calls token modifiers with the
    token only, hence this wrapper instead of register_token_modifier()."""

    def __init__(self, grant, token_handler):
        self._grant, self._handler = grant, token_handler

    def create_token(self, request, *args, **kwargs):
        token = self._handler.create_token(request, *args, **kwargs)
        return self._grant.add_id_token(token, self._handler, request)

    def __getattr__(self, name):
        return getattr(self._handler, name)


class OIDCPasswordGrant(GrantTypeBase):
    def __init__(self, request_validator=None, **kwargs):
        self.proxy_target = ResourceOwnerPasswordCredentialsGrant(request_validator=request_validator, **kwargs)

    def create_token_response(self, request, token_handler):
        return self.proxy_target.create_token_response(request, _IdTokenHandler(self, token_handler))


class PasswordIdTokenServer(Server):
    def __init__(self, request_validator, *args, **kwargs):
        super().__init__(request_validator, *args, **kwargs)
        self.password_grant = OIDCPasswordGrant(request_validator)
        self._grant_types["password"] = self.password_grant
