//! Where the emulators are, and SDK clients pointed at them.

/// What to run when the emulators' environment is missing.
pub const START_EMULATORS: &str =
    "start the emulators: scripts/emulators.sh start && eval \"$(scripts/emulators.sh env)\"";

/// Panics with [`START_EMULATORS`] unless each service's endpoint is configured:
/// `AWS_ENDPOINT_URL_<SERVICE>` (e.g. `"KINESIS"`, `"DYNAMODB"`, `"CLOUDWATCH"`) or the global
/// `AWS_ENDPOINT_URL`.
pub fn require_endpoints(services: &[&str]) {
    let global = std::env::var_os("AWS_ENDPOINT_URL").is_some();
    for service in services {
        let var = format!("AWS_ENDPOINT_URL_{service}");
        assert!(
            global || std::env::var_os(&var).is_some(),
            "{var} is unset: {START_EMULATORS}"
        );
    }
}

/// Panics with [`START_EMULATORS`] unless Kinesis, DynamoDB and CloudWatch all have endpoints.
pub fn require_emulators() {
    require_endpoints(&["KINESIS", "DYNAMODB", "CLOUDWATCH"]);
}

/// The SDK's default configuration: endpoints, region and credentials from the standard
/// environment variables. Checks nothing; see [`require_endpoints`].
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// SDK clients for a test's own set-up and checks (the code under test builds its own).
#[derive(Debug, Clone)]
pub struct Clients {
    /// Kinesis (kinesis-local).
    pub kinesis: aws_sdk_kinesis::Client,
    /// CloudWatch (moto).
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// DynamoDB (moto).
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl Clients {
    /// One client per service from `config`.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Clients {
            kinesis: aws_sdk_kinesis::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
        }
    }
}

/// Clients for every emulated service, after [`require_emulators`].
pub async fn clients() -> Clients {
    require_emulators();
    Clients::new(&sdk_config().await)
}
