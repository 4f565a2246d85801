"""Answering alerts by SMS: the gateway's inbound webhook (Twilio wire format)."""
