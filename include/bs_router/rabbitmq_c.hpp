#pragma once
// rabbitmq-c's headers: <amqp.h> up to 0.11 (Debian 12), <rabbitmq-c/amqp.h>
// from 0.12 on (FreeBSD's net/rabbitmq-c).

#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/ssl_socket.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#endif
