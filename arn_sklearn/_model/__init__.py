"""The fitted model's values: sufficient statistics (dense and block-sparse), uncertainty."""
