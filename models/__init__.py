"""Model provisioning (Whisper weights), intent-model training and weight conversion."""
