from oauth2_provider.oauth2_validators import OAuth2Validator


class BridgeOAuth2Validator(OAuth2Validator):
    """Adds preferred_username (scope `profile`) and email (scope `email`)
    to userinfo / id_token claims. `sub` (scope `openid`) is the user's pk.

    get_additional_claims() takes no request argument on purpose: DOT then
    advertises these claims in the discovery document's claims_supported.
    """

    def get_additional_claims(self):
        return {
            "preferred_username": lambda r: r.user.get_username(),
            "email": lambda r: r.user.email,
        }
