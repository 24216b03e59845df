"""Outgoing HTTP with `kiln_sdk.http`. kiln sends only to hosts the environment's allow-list
names (`kiln envs set --env dev --allow-host https://api.example.com`) and journals every
response, so a run resumed after a wait does not send its earlier requests again."""

from kiln_sdk import http, logger, task


@task(id="fetch-status")
def fetch_status(payload: dict) -> dict:
    """GETs a URL and returns its status and body."""
    url = payload["url"]
    try:
        response = http.get(url)
    except http.HttpError as e:
        # A host the allow-list does not name is refused before anything is sent.
        return {"error": str(e), "denied": e.denied}
    logger.info("fetched", url=url, status=response.status)
    return {"status": response.status, "body": response.text()}
