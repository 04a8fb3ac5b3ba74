//! Integration tests against the real RabbitMQ and PostgreSQL: each test gets its own
//! database and its own queue prefix, so they run in parallel without seeing each other.

mod bad_input;
mod catalog;
mod catalog_export;
mod dead_letters;
mod definitions;
mod faults;
mod gateway;
mod gateway_bus;
mod gateway_lifecycle;
mod gateway_outbound;
mod helpers;
mod outbox;
mod postsales;
mod postsales_bad_input;
mod postsales_processes;
mod postsales_storefront;
mod postsales_support;
mod privileges;
mod proxy;
mod registration;
mod report;
mod sales;
mod sales_bad_input;
mod sales_export;
mod sales_support;
mod scale;
mod secrets;
mod stock;
mod tls;
