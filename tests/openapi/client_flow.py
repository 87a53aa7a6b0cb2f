"""Drives register -> sign in -> me -> sign out through a Python client generated from the
service's own /openapi.json by a stock generator (openapi-python-client), as a client author
would. Run by tests/api/docs.rs with the generated package on PYTHONPATH:
    python client_flow.py BASE_URL
"""
import sys
import uuid

from cs_client import AuthenticatedClient, Client
from cs_client.api.auth import get_current_user, register_user, sign_in, sign_out
from cs_client.models import ErrorBody, ErrorCode, LoginRequest, RegisterRequest

base = sys.argv[1]
tag = uuid.uuid4().hex[:10]
email, password = f"generated_{tag}@example.com", "generated-client-9"
anonymous = Client(base_url=base, raise_on_unexpected_status=True)

registered = register_user.sync_detailed(
    client=anonymous,
    body=RegisterRequest(username=f"generated_{tag}", email=email, password=password),
)
assert registered.status_code == 201, registered

signed_in = sign_in.sync(client=anonymous, body=LoginRequest(email=email, password=password))
assert not isinstance(signed_in, ErrorBody), signed_in
signed = AuthenticatedClient(
    base_url=base, token=signed_in.data.access_token, raise_on_unexpected_status=True
)

me = get_current_user.sync(client=signed)
assert not isinstance(me, ErrorBody), me
assert me.data.user.email == email, me

signed_out = sign_out.sync_detailed(client=signed)
assert signed_out.status_code == 200, signed_out

after = get_current_user.sync(client=signed)
assert isinstance(after, ErrorBody), after
assert after.error_code == ErrorCode.SESSION_LOGGED_OUT, after
print("generated client: register 201, sign in 200, me 200, sign out 200, me 401 session_logged_out")
