from django.urls import include, path
from oauth2_provider.views import OAuthServerMetadataView

urlpatterns = [
    # RFC 8414 section 3: for issuer http://host/o the metadata lives at
    # http://host/.well-known/oauth-authorization-server/o (well-known part is
    # inserted BEFORE the issuer path). DOT's view reports OIDC_ISS_ENDPOINT
    # verbatim as `issuer`, so only the real issuer path is routed here.
    path(
        ".well-known/oauth-authorization-server/o",
        OAuthServerMetadataView.as_view(),
        name="rfc8414-metadata",
    ),
    # DOT itself: /o/token/, /o/introspect/, /o/revoke_token/, /o/userinfo/,
    # /o/.well-known/jwks.json, /o/.well-known/openid-configuration (with or
    # without trailing slash), and the non-RFC "suffix" form
    # /o/.well-known/oauth-authorization-server.
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
]
