//! `query-api create-api-key`: the way to the first admin key (and any other key
//! without the API): writes the hashed key to the database and prints the token once.

use anyhow::Context as _;

use crate::auth::{self, Role};
use crate::config::CreateApiKey;
use crate::store::access::NewKey;
use crate::store::Store;

pub async fn create_api_key(store: Store, command: &CreateApiKey) -> anyhow::Result<()> {
    let role = Role::parse(&command.role)
        .with_context(|| format!("--role {:?}: expected admin, operator or customer", command.role))?;
    anyhow::ensure!(
        (role == Role::Customer) == command.customer.is_some(),
        "a customer key needs --customer; admin and operator keys take none"
    );
    if let (Some(customer), Some(name)) = (&command.customer, &command.customer_name) {
        smartmeter_core::DeviceId::parse(customer)
            .map_err(|_| anyhow::anyhow!("--customer must be 1 to 64 of letters, digits and . _ : -"))?;
        if store.create_customer(customer, name, None).await? {
            eprintln!("Created customer {customer} ({name}).");
        }
    }
    let token = auth::new_token().context("random token")?;
    let created = store
        .create_key(&NewKey {
            user_name: &command.user,
            role: role.as_str(),
            customer_id: command.customer.as_deref(),
            key_id: &token.key_id,
            token_sha256: &token.sha256,
            label: command.label.as_deref(),
            expires_at: None,
        })
        .await?;
    eprintln!(
        "Created API key {} for {} (role {}). The token is shown once; keep it secret:",
        created.key_id, created.user_name, created.role
    );
    println!("{}", token.token);
    Ok(())
}
