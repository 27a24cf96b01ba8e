async def test_health_ready(client):
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
